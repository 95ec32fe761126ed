// Pass plugins: a Python file whose passes register themselves like the
// built-in ones joins --list-passes and pipelines (--load-pass-plugin is
// repeatable); a plugin that does not import, or takes a name that is already
// registered, is a usage error (exit status 2) with the reason. The worked
// example of docs/writing-a-pass.md, tests/plugins/vocab_tiles.py, rewrites the
// forward composite only; gshard-run checks the rewrite computes what the
// module it came from computes.
// RUN: gshard-opt --load-pass-plugin=%S/../plugins/vocab_tiles.py --load-pass-plugin=%S/../plugins/debugging.py --list-passes | FileCheck %s --check-prefix=LIST
// RUN: gshard-opt %s --load-pass-plugin=%S/../plugins/vocab_tiles.py --pass-pipeline='example-vocab-tiles{tiles=4}' -o %t
// RUN: FileCheck %s --input-file %t
// RUN: gshard-run %s %t --rtol 1e-5 | FileCheck %s --check-prefix=DIFF
// RUN: not gshard-opt %s --load-pass-plugin=%S/../plugins/vocab_tiles.py --pass-pipeline='example-vocab-tiles{tiles=0}' 2>&1 | FileCheck %s --check-prefix=BAD-OPTION
// RUN: not gshard-opt %s --load-pass-plugin=%S/../plugins/vocab_tiles.py --pass-pipeline='example-vocab-tiles{tiles=51}' 2>&1 | FileCheck %s --check-prefix=REFUSED
// RUN: not gshard-opt %s --pass-pipeline='example-vocab-tiles' 2>&1 | FileCheck %s --check-prefix=NOT-LOADED
// RUN: not gshard-opt %s --load-pass-plugin=%S/../plugins/broken_import.py --pass-pipeline=cse 2>&1 | FileCheck %s --check-prefix=BROKEN
// RUN: not gshard-opt --load-pass-plugin=%S/../plugins/clashing_name.py --list-passes 2>&1 | FileCheck %s --check-prefix=CLASH
// RUN: not gshard-opt --load-pass-plugin=%S/../plugins/missing.py --list-passes 2>&1 | FileCheck %s --check-prefix=MISSING

// LIST-LABEL: gshard passes:
// LIST:         example-vocab-tiles  Rewrite forward gshard composites into a loop over equal vocab tiles  [pass plugin '{{.*}}vocab_tiles.py']
// LIST-NEXT:        tiles=4  (int)
// LIST:         gshard-inline  Replace gshard composites by calls to their decomposition{{$}}
// LIST:         test-crash  {{.*}}[pass plugin '{{.*}}debugging.py']

// V = 50 in 4 tiles of 13 classes (the last one starts at 37 and masks 37..38);
// the gradient composite is left alone, with its decomposition.
// CHECK-LABEL: func.func public @main(
// CHECK:         stablehlo.while({{.*}}%[[EA:[^ ]+]] = %arg1,
// CHECK:           stablehlo.constant dense<4> : tensor<i32>
// CHECK:           stablehlo.compare LT
// CHECK:           stablehlo.dynamic_slice %[[EA]], {{.*}} sizes = [13, 16]
// CHECK-NOT:     stablehlo.composite "gshard.shared_embedding_softmax"
// CHECK:         stablehlo.composite "gshard.shared_embedding_softmax_grad"
// CHECK-NOT:   func.func private @gshard.shared_embedding_softmax(
// CHECK:       func.func private @gshard.shared_embedding_softmax_grad(

// DIFF:      gshard-run: inputs (seed 0): {{.*}} tensor<8x1xi32> in [0, 50)
// DIFF:      #0 result[0] {{.*}} ok
// DIFF-NEXT: #1 result[1][0] {{.*}} ok
// DIFF-NEXT: #2 result[1][1] {{.*}} ok
// DIFF-NEXT: gshard-run: all 3 results agree

// BAD-OPTION: gshard-opt: error: bad pass pipeline: pass 'example-vocab-tiles': option tiles=0 rejected: tiles must be at least 1, got 0
// REFUSED: pass 'example-vocab-tiles' failed: 51 tiles for 50 classes
// REFUSED-NEXT: at loc({{.*}}):
// REFUSED-NEXT: stablehlo.composite "gshard.shared_embedding_softmax"
// NOT-LOADED: gshard-opt: error: bad pass pipeline: unknown pass 'example-vocab-tiles'
// BROKEN: gshard-opt: error: cannot load pass plugin '{{.*}}broken_import.py': ModuleNotFoundError: No module named 'gshard_op.no_such_module' (at {{.*}}broken_import.py:4)
// CLASH: gshard-opt: error: cannot load pass plugin '{{.*}}clashing_name.py': ValueError: pass {{.*}}.Clash needs a unique name, got 'gshard-inline', which gshard_op.passes.inline.InlinePass registered already
// MISSING: gshard-opt: error: cannot load pass plugin '{{.*}}missing.py': no such file

module @jit_loss attributes {mhlo.num_partitions = 1 : i32, mhlo.num_replicas = 1 : i32} {
  func.func public @main(%arg0: tensor<8x16xf32>, %arg1: tensor<50x16xf32>, %arg2: tensor<8x1xf32>, %arg3: tensor<8x1xi32>) -> (tensor<f32> {jax.result_info = "result[0]"}, tensor<8x16xf32> {jax.result_info = "result[1][0]"}, tensor<50x16xf32> {jax.result_info = "result[1][1]"}) {
    %0 = stablehlo.reshape %arg3 : (tensor<8x1xi32>) -> tensor<8xi32>
    %1 = stablehlo.reshape %arg2 : (tensor<8x1xf32>) -> tensor<8xf32>
    %2:4 = stablehlo.composite "gshard.shared_embedding_softmax" %arg0, %arg1, %0 {composite_attributes = {label_smoothing_prob = 0.000000e+00 : f64, logit_scale = 2.500000e-01 : f64, logits_abs_max = 0.000000e+00 : f64, soft_cap_logits = 0.000000e+00 : f64, use_tgt_labels_size_as_loss_denominator = true, z_loss_weight = 1.000000e-01 : f64}, decomposition = @gshard.shared_embedding_softmax, version = 1 : i32} : (tensor<8x16xf32>, tensor<50x16xf32>, tensor<8xi32>) -> (tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>)
    %3 = stablehlo.multiply %2#0, %1 : tensor<8xf32>
    %cst = stablehlo.constant dense<0.000000e+00> : tensor<f32>
    %4 = stablehlo.reduce(%3 init: %cst) applies stablehlo.add across dimensions = [0] : (tensor<8xf32>, tensor<f32>) -> tensor<f32>
    %5 = stablehlo.multiply %2#3, %1 : tensor<8xf32>
    %cst_0 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
    %6 = stablehlo.reduce(%5 init: %cst_0) applies stablehlo.add across dimensions = [0] : (tensor<8xf32>, tensor<f32>) -> tensor<f32>
    %cst_1 = stablehlo.constant dense<1.000000e-01> : tensor<f32>
    %7 = stablehlo.multiply %cst_1, %6 : tensor<f32>
    %cst_2 = stablehlo.constant dense<8.000000e+00> : tensor<f32>
    %8 = stablehlo.divide %7, %cst_2 : tensor<f32>
    %cst_3 = stablehlo.constant dense<8.000000e+00> : tensor<f32>
    %9 = stablehlo.divide %4, %cst_3 : tensor<f32>
    %10 = stablehlo.add %9, %8 : tensor<f32>
    %cst_4 = stablehlo.constant dense<1.000000e+00> : tensor<f32>
    %cst_5 = stablehlo.constant dense<8.000000e+00> : tensor<f32>
    %11 = stablehlo.divide %cst_4, %cst_5 : tensor<f32>
    %cst_6 = stablehlo.constant dense<1.000000e+00> : tensor<f32>
    %cst_7 = stablehlo.constant dense<8.000000e+00> : tensor<f32>
    %12 = stablehlo.divide %cst_6, %cst_7 : tensor<f32>
    %cst_8 = stablehlo.constant dense<1.000000e-01> : tensor<f32>
    %13 = stablehlo.multiply %cst_8, %12 : tensor<f32>
    %14 = stablehlo.broadcast_in_dim %13, dims = [] : (tensor<f32>) -> tensor<8xf32>
    %15 = stablehlo.multiply %14, %1 : tensor<8xf32>
    %16 = stablehlo.broadcast_in_dim %11, dims = [] : (tensor<f32>) -> tensor<8xf32>
    %17 = stablehlo.multiply %16, %1 : tensor<8xf32>
    %cst_9 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
    %18 = stablehlo.broadcast_in_dim %cst_9, dims = [] : (tensor<f32>) -> tensor<8xf32>
    %19:2 = stablehlo.composite "gshard.shared_embedding_softmax_grad" %arg0, %arg1, %0, %2#2, %17, %18, %15 {composite_attributes = {label_smoothing_prob = 0.000000e+00 : f64, logit_scale = 2.500000e-01 : f64, logits_abs_max = 0.000000e+00 : f64, soft_cap_logits = 0.000000e+00 : f64, use_tgt_labels_size_as_loss_denominator = true, z_loss_weight = 1.000000e-01 : f64}, decomposition = @gshard.shared_embedding_softmax_grad, version = 1 : i32} : (tensor<8x16xf32>, tensor<50x16xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) -> (tensor<8x16xf32>, tensor<50x16xf32>)
    return %10, %19#0, %19#1 : tensor<f32>, tensor<8x16xf32>, tensor<50x16xf32>
  }
  func.func private @gshard.shared_embedding_softmax(%arg0: tensor<8x16xf32>, %arg1: tensor<50x16xf32>, %arg2: tensor<8xi32>) -> (tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>) {
    %cst = stablehlo.constant dense<2.500000e-01> : tensor<f32>
    %0 = stablehlo.broadcast_in_dim %cst, dims = [] : (tensor<f32>) -> tensor<8x16xf32>
    %1 = stablehlo.multiply %arg0, %0 : tensor<8x16xf32>
    %2 = stablehlo.dot_general %1, %arg1, contracting_dims = [1] x [1], precision = [DEFAULT, DEFAULT] : (tensor<8x16xf32>, tensor<50x16xf32>) -> tensor<8x50xf32>
    %cst_0 = stablehlo.constant dense<0xFF800000> : tensor<f32>
    %3 = stablehlo.reduce(%2 init: %cst_0) applies stablehlo.maximum across dimensions = [1] : (tensor<8x50xf32>, tensor<f32>) -> tensor<8xf32>
    %cst_1 = stablehlo.constant dense<0xFF800000> : tensor<f32>
    %4 = stablehlo.broadcast_in_dim %cst_1, dims = [] : (tensor<f32>) -> tensor<8xf32>
    %5 = stablehlo.maximum %4, %3 : tensor<8xf32>
    %6 = stablehlo.is_finite %5 : (tensor<8xf32>) -> tensor<8xi1>
    %cst_2 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
    %7 = stablehlo.broadcast_in_dim %cst_2, dims = [] : (tensor<f32>) -> tensor<8xf32>
    %8 = stablehlo.select %6, %5, %7 : tensor<8xi1>, tensor<8xf32>
    %9 = stablehlo.broadcast_in_dim %8, dims = [0] : (tensor<8xf32>) -> tensor<8x1xf32>
    %10 = stablehlo.broadcast_in_dim %9, dims = [0, 1] : (tensor<8x1xf32>) -> tensor<8x50xf32>
    %11 = stablehlo.subtract %2, %10 : tensor<8x50xf32>
    %12 = stablehlo.exponential %11 : tensor<8x50xf32>
    %cst_3 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
    %13 = stablehlo.reduce(%12 init: %cst_3) applies stablehlo.add across dimensions = [1] : (tensor<8x50xf32>, tensor<f32>) -> tensor<8xf32>
    %14 = stablehlo.sign %13 : tensor<8xf32>
    %15 = stablehlo.abs %13 : tensor<8xf32>
    %16 = stablehlo.log %15 : tensor<8xf32>
    %17 = stablehlo.add %16, %8 : tensor<8xf32>
    %18 = stablehlo.broadcast_in_dim %17, dims = [0] : (tensor<8xf32>) -> tensor<8x1xf32>
    %19 = stablehlo.broadcast_in_dim %18, dims = [0, 1] : (tensor<8x1xf32>) -> tensor<8x50xf32>
    %20 = stablehlo.subtract %2, %19 : tensor<8x50xf32>
    %21 = call @_one_hot(%arg2) : (tensor<8xi32>) -> tensor<8x50xf32>
    %22 = stablehlo.multiply %20, %21 : tensor<8x50xf32>
    %cst_4 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
    %23 = stablehlo.reduce(%22 init: %cst_4) applies stablehlo.add across dimensions = [1] : (tensor<8x50xf32>, tensor<f32>) -> tensor<8xf32>
    %24 = stablehlo.negate %23 : tensor<8xf32>
    %25 = call @argmax(%2) : (tensor<8x50xf32>) -> tensor<8xi32>
    %26 = stablehlo.multiply %17, %17 : tensor<8xf32>
    return %24, %25, %17, %26 : tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>
  }
  func.func private @_one_hot(%arg0: tensor<8xi32>) -> tensor<8x50xf32> {
    %0 = stablehlo.broadcast_in_dim %arg0, dims = [0] : (tensor<8xi32>) -> tensor<8x1xi32>
    %1 = stablehlo.iota dim = 1 : tensor<1x50xi32>
    %2 = stablehlo.broadcast_in_dim %0, dims = [0, 1] : (tensor<8x1xi32>) -> tensor<8x50xi32>
    %3 = stablehlo.broadcast_in_dim %1, dims = [0, 1] : (tensor<1x50xi32>) -> tensor<8x50xi32>
    %4 = stablehlo.compare EQ, %2, %3, SIGNED : (tensor<8x50xi32>, tensor<8x50xi32>) -> tensor<8x50xi1>
    %5 = stablehlo.convert %4 : (tensor<8x50xi1>) -> tensor<8x50xf32>
    return %5 : tensor<8x50xf32>
  }
  func.func private @argmax(%arg0: tensor<8x50xf32>) -> tensor<8xi32> {
    %0 = stablehlo.iota dim = 1 : tensor<8x50xi32>
    %cst = stablehlo.constant dense<0xFF800000> : tensor<f32>
    %c = stablehlo.constant dense<0> : tensor<i32>
    %1:2 = stablehlo.reduce(%arg0 init: %cst), (%0 init: %c) across dimensions = [1] : (tensor<8x50xf32>, tensor<8x50xi32>, tensor<f32>, tensor<i32>) -> (tensor<8xf32>, tensor<8xi32>)
     reducer(%arg1: tensor<f32>, %arg3: tensor<f32>) (%arg2: tensor<i32>, %arg4: tensor<i32>)  {
      %2 = stablehlo.compare GT, %arg1, %arg3, FLOAT : (tensor<f32>, tensor<f32>) -> tensor<i1>
      %3 = stablehlo.compare NE, %arg1, %arg1, FLOAT : (tensor<f32>, tensor<f32>) -> tensor<i1>
      %4 = stablehlo.or %2, %3 : tensor<i1>
      %5 = stablehlo.compare EQ, %arg1, %arg3, FLOAT : (tensor<f32>, tensor<f32>) -> tensor<i1>
      %6 = stablehlo.compare LT, %arg2, %arg4, SIGNED : (tensor<i32>, tensor<i32>) -> tensor<i1>
      %7 = stablehlo.and %5, %6 : tensor<i1>
      %8 = stablehlo.or %4, %7 : tensor<i1>
      %9 = stablehlo.select %4, %arg1, %arg3 : tensor<i1>, tensor<f32>
      %10 = stablehlo.select %8, %arg2, %arg4 : tensor<i1>, tensor<i32>
      stablehlo.return %9, %10 : tensor<f32>, tensor<i32>
    }
    return %1#1 : tensor<8xi32>
  }
  func.func private @gshard.shared_embedding_softmax_grad(%arg0: tensor<8x16xf32>, %arg1: tensor<50x16xf32>, %arg2: tensor<8xi32>, %arg3: tensor<8xf32>, %arg4: tensor<8xf32>, %arg5: tensor<8xf32>, %arg6: tensor<8xf32>) -> (tensor<8x16xf32>, tensor<50x16xf32>) {
    %cst = stablehlo.constant dense<2.500000e-01> : tensor<f32>
    %0 = stablehlo.broadcast_in_dim %cst, dims = [] : (tensor<f32>) -> tensor<8x16xf32>
    %1 = stablehlo.multiply %arg0, %0 : tensor<8x16xf32>
    %2 = stablehlo.dot_general %1, %arg1, contracting_dims = [1] x [1], precision = [DEFAULT, DEFAULT] : (tensor<8x16xf32>, tensor<50x16xf32>) -> tensor<8x50xf32>
    %3 = stablehlo.broadcast_in_dim %arg3, dims = [0] : (tensor<8xf32>) -> tensor<8x1xf32>
    %4 = stablehlo.broadcast_in_dim %3, dims = [0, 1] : (tensor<8x1xf32>) -> tensor<8x50xf32>
    %5 = stablehlo.subtract %2, %4 : tensor<8x50xf32>
    %6 = stablehlo.exponential %5 : tensor<8x50xf32>
    %7 = call @_one_hot(%arg2) : (tensor<8xi32>) -> tensor<8x50xf32>
    %cst_0 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
    %8 = stablehlo.reduce(%7 init: %cst_0) applies stablehlo.add across dimensions = [1] : (tensor<8x50xf32>, tensor<f32>) -> tensor<8xf32>
    %9 = stablehlo.broadcast_in_dim %8, dims = [0] : (tensor<8xf32>) -> tensor<8x1xf32>
    %cst_1 = stablehlo.constant dense<2.000000e+00> : tensor<f32>
    %10 = stablehlo.broadcast_in_dim %cst_1, dims = [] : (tensor<f32>) -> tensor<8xf32>
    %11 = stablehlo.multiply %10, %arg3 : tensor<8xf32>
    %12 = stablehlo.multiply %11, %arg6 : tensor<8xf32>
    %13 = stablehlo.add %arg5, %12 : tensor<8xf32>
    %14 = stablehlo.broadcast_in_dim %13, dims = [0] : (tensor<8xf32>) -> tensor<8x1xf32>
    %15 = stablehlo.broadcast_in_dim %arg4, dims = [0] : (tensor<8xf32>) -> tensor<8x1xf32>
    %16 = stablehlo.broadcast_in_dim %9, dims = [0, 1] : (tensor<8x1xf32>) -> tensor<8x50xf32>
    %17 = stablehlo.multiply %6, %16 : tensor<8x50xf32>
    %18 = stablehlo.subtract %17, %7 : tensor<8x50xf32>
    %19 = stablehlo.broadcast_in_dim %15, dims = [0, 1] : (tensor<8x1xf32>) -> tensor<8x50xf32>
    %20 = stablehlo.multiply %19, %18 : tensor<8x50xf32>
    %21 = stablehlo.broadcast_in_dim %14, dims = [0, 1] : (tensor<8x1xf32>) -> tensor<8x50xf32>
    %22 = stablehlo.multiply %21, %6 : tensor<8x50xf32>
    %23 = stablehlo.add %20, %22 : tensor<8x50xf32>
    %24 = stablehlo.dot_general %23, %arg1, contracting_dims = [1] x [0], precision = [DEFAULT, DEFAULT] : (tensor<8x50xf32>, tensor<50x16xf32>) -> tensor<8x16xf32>
    %cst_2 = stablehlo.constant dense<2.500000e-01> : tensor<f32>
    %25 = stablehlo.broadcast_in_dim %cst_2, dims = [] : (tensor<f32>) -> tensor<8x16xf32>
    %26 = stablehlo.multiply %25, %24 : tensor<8x16xf32>
    %cst_3 = stablehlo.constant dense<2.500000e-01> : tensor<f32>
    %27 = stablehlo.broadcast_in_dim %cst_3, dims = [] : (tensor<f32>) -> tensor<8x16xf32>
    %28 = stablehlo.multiply %arg0, %27 : tensor<8x16xf32>
    %29 = stablehlo.dot_general %23, %28, contracting_dims = [0] x [0], precision = [DEFAULT, DEFAULT] : (tensor<8x50xf32>, tensor<8x16xf32>) -> tensor<50x16xf32>
    return %26, %29 : tensor<8x16xf32>, tensor<50x16xf32>
  }
}
