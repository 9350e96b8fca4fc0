"""Running models over rows, below the evaluation and the oracle-corpus sampler that share it.

``executor``: ``ExecutionConfig`` and ``map_rows`` (Ray Data ``map_batches`` over an actor pool, or
the same actor in this process); ``decoders``: next-token choice from logits (paper 4.1's unbiased
ancestral sampling and its truncations); ``sampler``: the ``Sampler`` stage; ``oracle_corpus``:
the oracle experiment's training corpus (paper 4.1.3) sampled with them.
"""
