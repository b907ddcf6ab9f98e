"""Loaders of the real benchmarks into `Record`s; every row loads or is reported with its id and the reason."""

from embodied_data.loaders.egoschema import load_egoschema
from embodied_data.loaders.embodied_r_json import load_embodied_r_json
from embodied_data.loaders.mvbench import load_mvbench
from embodied_data.loaders.urbanvideo import load_urbanvideo
from embodied_data.loaders.vsi_bench import load_vsi_bench

__all__ = ["load_egoschema", "load_embodied_r_json", "load_mvbench", "load_urbanvideo", "load_vsi_bench"]
