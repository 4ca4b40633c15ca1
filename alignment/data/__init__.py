"""Data: vocabulary, the embedded environment, TFDS/seqio pipelines, importers.

  language, environment  the synthetic task and its golden judge (on text)
  golden                 the golden judge on token ids, in batches
  vocab                  the shipped SentencePiece model, seqio's bytes
  tfds_env, tasks        TFDS builder (generated locally) and seqio tasks
  converters             seqio FeatureConverters -> the layouts of batches.py
  pipeline               host shard -> deterministic, checkpointable global batches
  stream                 D_online writer and exact/shuffled replay
  import_pairs           user preference files -> seqio tasks

Modules that use TensorFlow import it through `tf_setup`, which hides GPUs and
TPUs from it first. Importing this package imports neither.
"""
