"""StableHLO emitters, one layer below both of their users.

The primitives' lowering rules (`gshard_op/primitive.py`) and the passes
(`passes/`) both build the op's loops from here; nothing here imports a pass.

* `builders`: values in, values out (`dot`, `row_max`, `select`, `Loop`, ...).
* `softmax`: the chunk-level math (online max / sum-exp / argmax, cotangents).
* `loops`: the chunked forward and gradient loops and their plans.
* `sharding`: the vocab-sharded layout rule and the per-device emitters.
"""
