"""Data for adapterkit: GLUE tasks, user files, and sentiment domains for transfer.

Everything here returns `datasets.Dataset` objects; `datasets` itself is only
imported when data is loaded, so importing this package stays cheap.
"""
from adapterkit.data.amazon import DOMAINS, amazon_splits, load_amazon, parse_reviews
from adapterkit.data.domains import add_domain_file, load_domain_splits, sst2_as_domain
from adapterkit.data.encode import PadCollator, encode, length_grouped_order
from adapterkit.data.glue import load_glue, resolve_glue_dir
from adapterkit.data.splits import few_shot, stratified_split
from adapterkit.data.tasks import TASKS, GlueTask, get_task, register_task
from adapterkit.data.tsv import read_glue_tsv
from adapterkit.data.user_files import read_domain_file, read_predict_file

__all__ = [
    "DOMAINS", "TASKS", "GlueTask", "PadCollator", "amazon_splits", "encode", "few_shot", "get_task",
    "add_domain_file", "length_grouped_order", "load_amazon", "load_domain_splits", "load_glue", "parse_reviews",
    "read_domain_file", "read_glue_tsv", "read_predict_file", "register_task", "resolve_glue_dir",
    "sst2_as_domain", "stratified_split",
]
