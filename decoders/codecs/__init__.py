"""One module per payload format; each registers its codec on import."""

from decoders.codecs import browan_tbsl100 as browan_tbsl100
from decoders.codecs import cayenne_lpp as cayenne_lpp
from decoders.codecs import citysense_json as citysense_json
from decoders.codecs import decentlab_dl_ac as decentlab_dl_ac
from decoders.codecs import decentlab_dl_pm as decentlab_dl_pm
from decoders.codecs import elsys as elsys
from decoders.codecs import lorasoundkit as lorasoundkit
from decoders.codecs import milesight_am307 as milesight_am307
from decoders.codecs import milesight_vs121 as milesight_vs121
from decoders.codecs import milesight_vs133 as milesight_vs133
from decoders.codecs import milesight_ws302 as milesight_ws302
from decoders.codecs import parametric_pcr2 as parametric_pcr2
