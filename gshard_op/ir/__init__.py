"""What must be IR: splicing JAX-lowered programs into a module, and the
`sdy.manual_computation` around a vocab-sharded body.

The math is JAX (`gshard_op/online_softmax.py`, `chunked.py`, `fused.py`,
`sharded.py`); the primitives lower it with `mlir.lower_fun` and the passes
splice what JAX lowers for a composite's operand types.

* `splice`: a lowered program's ops at an insertion point (`splice`), its
  text cached per operand types (`lowered`), and the plan attribute on the
  loops it made (`tagging_new_loops`).
* `manual`: the manual computation over a mesh, given its body.
* `types`: the types of IR values.
"""
