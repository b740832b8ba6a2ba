"""Few-shot integration of a new modality (docs/fewshot.md): the parts that map any encoder's features to LM
input tokens through one projector shared by every modality, and the hypernetwork that writes a modality's
low-rank adapter on that projector from a handful of its samples.

common_width: any encoder width -> the common width (a fixed random isometric map).
isometry: random orthogonal transforms (and permutations) of the common space, the training augmentation.
low_rank_adapter: the adapter (down, up, bias) on the projector's first layer, as tensors or as parameters.
projector: the shared projector (common width -> N LM input embeddings).
caption_embedding: a caption as the mean of the frozen LM's input embeddings of its tokens.
set_encoder: k (feature, caption) or feature-only samples -> what the hypernetwork reads.
hypernetwork: the set encoder's output -> the adapter.
"""
