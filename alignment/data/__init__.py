"""Data: vocabulary, the embedded environment, TFDS/seqio pipelines, importers."""
