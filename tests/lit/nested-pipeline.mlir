// Nested pipelines, read as mlir-opt reads them: `func.func(...)` runs MLIR
// passes on each function, `builtin.module(...)` around the whole pipeline is
// the module itself, and gshard passes run where they appear at the top level.
// RUN: gshard-opt %s -p 'func.func(canonicalize)' | FileCheck %s --check-prefix=CANON
// RUN: gshard-opt %s -p 'builtin.module(func.func(cse))' | FileCheck %s --check-prefix=CSE
// RUN: gshard-opt %s -p 'builtin.module(func.func(canonicalize, cse), symbol-dce)' | FileCheck %s --check-prefix=BOTH
// RUN: gshard-opt %S/chunk-forward.mlir --split-input-file -p 'builtin.module(gshard-chunk-softmax{vocab-chunk=16},func.func(canonicalize,cse))' | FileCheck %s --check-prefix=GSHARD

// Errors are pipeline errors (exit status 2), reported before the input is read.
// RUN: not gshard-opt %s -p 'builtin.module(func.func(gshard-inline))' 2>&1 | FileCheck %s --check-prefix=NESTED-GSHARD
// RUN: not gshard-opt %s -p 'builtin.module(func.func(cse)' 2>&1 | FileCheck %s --check-prefix=UNCLOSED
// RUN: not gshard-opt %s -p 'func.func(cse))' 2>&1 | FileCheck %s --check-prefix=EXTRA
// RUN: not gshard-opt %s -p 'builtin.module(no.such_op(cse))' 2>&1 | FileCheck %s --check-prefix=ANCHOR
// RUN: not gshard-opt %s -p 'func.func(canonicalize,no-such-pass)' 2>&1 | FileCheck %s --check-prefix=UNKNOWN

// canonicalize erases the dead subtract in each function, leaves the twin multiplies.
// CANON-LABEL: func.func @twice(
// CANON-NOT:     stablehlo.subtract
// CANON-COUNT-2: stablehlo.multiply
// CANON-LABEL: func.func private @unused(
// CANON-NOT:     stablehlo.subtract
// CANON:         return

// cse merges the twin multiplies in each function (and erases dead ops too).
// CSE-LABEL: func.func @twice(
// CSE:         %[[M:.+]] = stablehlo.multiply
// CSE-NOT:     stablehlo.multiply
// CSE:         stablehlo.add %[[M]], %[[M]]
// CSE-LABEL: func.func private @unused(

// Both per function, then symbol-dce on the module drops the private function nobody calls.
// BOTH-LABEL: func.func @twice(
// BOTH:         stablehlo.multiply
// BOTH-NOT:     stablehlo.multiply
// BOTH-NOT:     stablehlo.subtract
// BOTH:         return
// BOTH-NOT:   @unused

// The gshard pass rewrote every composite into its loop before the per-function passes.
// GSHARD-LABEL: func.func public @forward_ids(
// GSHARD:         stablehlo.while(
// GSHARD-NOT:   stablehlo.composite

// NESTED-GSHARD: gshard-opt: error: bad pass pipeline: gshard pass 'gshard-inline' cannot run nested under 'func.func' (in 'func.func(gshard-inline)')
// UNCLOSED: gshard-opt: error: bad pass pipeline: unbalanced parentheses in pipeline {{.*}}: the '(' of 'builtin.module(' at column 15 is never closed
// EXTRA: gshard-opt: error: bad pass pipeline: unbalanced parentheses in pipeline {{.*}}: ')' at column 15 closes nothing
// ANCHOR: gshard-opt: error: bad pass pipeline: unknown anchor 'no.such_op' in 'no.such_op(cse)'
// UNKNOWN: gshard-opt: error: bad pass pipeline: unknown pass 'no-such-pass'

func.func @twice(%x: tensor<f32>) -> tensor<f32> {
  %c = stablehlo.constant dense<2.0> : tensor<f32>
  %a = stablehlo.multiply %x, %c : tensor<f32>
  %b = stablehlo.multiply %x, %c : tensor<f32>
  %dead = stablehlo.subtract %x, %c : tensor<f32>
  %s = stablehlo.add %a, %b : tensor<f32>
  return %s : tensor<f32>
}
func.func private @unused(%x: tensor<f32>) -> tensor<f32> {
  %dead = stablehlo.subtract %x, %x : tensor<f32>
  return %x : tensor<f32>
}
