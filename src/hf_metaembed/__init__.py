"""hf_metaembed."""
