// RUN: gshard-opt %s --split-input-file --pass-pipeline='gshard-shard-vocab{vocab-chunk=4}' -o %t
// RUN: FileCheck %s --input-file %t
// RUN: FileCheck %s --input-file %t --check-prefix=GONE

// gshard-shard-vocab on a ("data"=2, "model"=4) mesh: x [8, 16] on "data", the
// embedding [64, 16] on "model" (16 classes a shard), read from the Shardy
// annotations of @main's arguments. Each composite becomes one
// sdy.manual_computation over both axes whose region sees local shapes (x
// [4, 16], embedding [16, 16]) and runs the chunked loops over its own classes
// (chunks of 4); the forward then all-reduces the per-token statistics over
// "model" (groups [[0,1,2,3],[4,5,6,7]]): max, sum-exp, target logit and
// logit sum (add), and the first argmax (minimum). Label smoothing and the
// id range use the global V = 64. The gradient sums d_x over "model" and the
// shard's d_embedding over "data" (groups [[0,4],[1,5],[2,6],[3,7]]).
// No composite, no decomposition and no [N, V] tensor is left.
// Inputs: `python tools/make_lit_inputs.py --trim sharded_forward_ids`, then
// `... --trim sharded_value_and_grad_ids` (decompositions kept as generated).

// GONE-NOT: stablehlo.composite
// GONE-NOT: func.func private
// GONE-NOT: x64xf32>

// The forward composite (label smoothing 0.1, z-loss).
// CHECK:       sdy.mesh @mesh = <["data"=2, "model"=4]>
// CHECK-LABEL: func.func public @sharded_forward_ids(
// CHECK-SAME:      %[[X:[^:]+]]: tensor<8x16xf32> {sdy.sharding = #sdy.sharding<@mesh, [{"data"}, {}]>}, %[[E:[^:]+]]: tensor<64x16xf32> {sdy.sharding = #sdy.sharding<@mesh, [{"model"}, {}]>}
// CHECK:         %[[FWD:[^:]+]]:4 = sdy.manual_computation(%[[X]], %[[E]], %{{[^)]+}})
// CHECK-SAME:      in_shardings=[<@mesh, [{"data"}, {}]>, <@mesh, [{"model"}, {}]>, <@mesh, [{"data"}]>]
// CHECK-SAME:      out_shardings=[<@mesh, [{"data"}]>, <@mesh, [{"data"}]>, <@mesh, [{"data"}]>, <@mesh, [{"data"}]>]
// CHECK-SAME:      manual_axes={"data", "model"}
// CHECK-SAME:      (%[[XL:[^:]+]]: tensor<4x16xf32>, %[[EL:[^:]+]]: tensor<16x16xf32>, %[[IDS:[^:]+]]: tensor<4xi32>) {
// This shard's first class: its position along "model" (the table entry of
// its partition id), times 16; the loop carries it.
// CHECK-DAG:       %[[POS:[^ ]+]] = stablehlo.constant dense<[0, 1, 2, 3, 0, 1, 2, 3]> : tensor<8xi32>
// CHECK-DAG:       stablehlo.partition_id : tensor<ui32>
// CHECK:           stablehlo.dynamic_slice %[[POS]], {{.*}} sizes = [1] : (tensor<8xi32>, tensor<i32>) -> tensor<1xi32>
// CHECK:           %[[C16:[^ ]+]] = stablehlo.constant dense<16> : tensor<i32>
// CHECK-NEXT:      %[[FIRST:[^ ]+]] = stablehlo.multiply %{{[^ ]+}}, %[[C16]] : tensor<i32>
// Ids are in range against the global V.
// CHECK:           %[[V:[^ ]+]] = stablehlo.constant dense<64> : tensor<i32>
// CHECK-NEXT:      %[[VB:[^ ]+]] = stablehlo.broadcast_in_dim %[[V]], dims = [] : (tensor<i32>) -> tensor<4xi32>
// CHECK-NEXT:      stablehlo.compare LT, %[[IDS]], %[[VB]], SIGNED
// CHECK:           stablehlo.while(%[[ELA:[^ ]+]] = %[[EL]], %{{[^ ]+}} = %[[FIRST]], %{{[^ ]+}} = %[[XL]],
// CHECK:             stablehlo.dynamic_slice %[[ELA]], {{.*}} sizes = [4, 16] : (tensor<16x16xf32>, tensor<i32>, tensor<i32>) -> tensor<4x16xf32>
// CHECK:             stablehlo.dot_general {{.*}} : (tensor<4x16xf32>, tensor<4x16xf32>) -> tensor<4x4xf32>
// CHECK:             stablehlo.return
// CHECK:           }
// CHECK:           "stablehlo.all_reduce"(%{{[^)]+}}) <{channel_handle = #stablehlo.channel_handle<handle = 1, type = 1>, replica_groups = dense<{{\[\[}}0, 1, 2, 3], [4, 5, 6, 7]]> : tensor<2x4xi64>, use_global_device_ids}> ({
// CHECK:             stablehlo.maximum %{{[^ ]+}}, %{{[^ ]+}} : tensor<f32>
// CHECK:           }) : (tensor<4xf32>) -> tensor<4xf32>
// CHECK:           "stablehlo.all_reduce"(%{{[^)]+}}) <{channel_handle = #stablehlo.channel_handle<handle = 2, type = 1>, replica_groups = dense<{{\[\[}}0, 1, 2, 3], [4, 5, 6, 7]]>
// CHECK:             stablehlo.add %{{[^ ]+}}, %{{[^ ]+}} : tensor<f32>
// CHECK:           }) : (tensor<4xf32>) -> tensor<4xf32>
// CHECK:           "stablehlo.all_reduce"(%{{[^)]+}}) <{channel_handle = #stablehlo.channel_handle<handle = 3, type = 1>, replica_groups = dense<{{\[\[}}0, 1, 2, 3], [4, 5, 6, 7]]>
// CHECK:             stablehlo.add %{{[^ ]+}}, %{{[^ ]+}} : tensor<f32>
// CHECK:           }) : (tensor<4xf32>) -> tensor<4xf32>
// CHECK:           "stablehlo.all_reduce"(%{{[^)]+}}) <{channel_handle = #stablehlo.channel_handle<handle = 4, type = 1>, replica_groups = dense<{{\[\[}}0, 1, 2, 3], [4, 5, 6, 7]]>
// CHECK:             stablehlo.add %{{[^ ]+}}, %{{[^ ]+}} : tensor<f32>
// CHECK:           }) : (tensor<4xf32>) -> tensor<4xf32>
// CHECK:           "stablehlo.all_reduce"(%{{[^)]+}}) <{channel_handle = #stablehlo.channel_handle<handle = 5, type = 1>, replica_groups = dense<{{\[\[}}0, 1, 2, 3], [4, 5, 6, 7]]>
// CHECK:             stablehlo.minimum %{{[^ ]+}}, %{{[^ ]+}} : tensor<i32>
// CHECK:           }) : (tensor<4xi32>) -> tensor<4xi32>
// CHECK-NOT:       "stablehlo.all_reduce"
// Label smoothing: off = 0.1 / 64, and V * logsumexp with V = 64.
// CHECK:           %[[VF:[^ ]+]] = stablehlo.constant dense<6.400000e+01> : tensor<f32>
// CHECK-NEXT:      stablehlo.broadcast_in_dim %[[VF]], dims = [] : (tensor<f32>) -> tensor<4xf32>
// CHECK:           %[[OFF:[^ ]+]] = stablehlo.constant dense<1.562500e-03> : tensor<f32>
// CHECK-NEXT:      stablehlo.broadcast_in_dim %[[OFF]], dims = [] : (tensor<f32>) -> tensor<4xf32>
// CHECK-NOT:       "stablehlo.all_reduce"
// CHECK:           sdy.return {{.*}} : tensor<4xf32>, tensor<4xi32>, tensor<4xf32>, tensor<4xf32>
// CHECK:         } {gshard.plan = "gshard-shard-vocab: vocab over ['model'] (4 shards), tokens over ['data']"} : (tensor<8x16xf32>, tensor<64x16xf32>, tensor<8xi32>) -> (tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>)
// CHECK:         return {{.*}}, %[[FWD]]#1 : tensor<f32>, tensor<8xi32>

// The training step: the forward as above, then the gradient composite.
// CHECK:       sdy.mesh @mesh = <["data"=2, "model"=4]>
// CHECK-LABEL: func.func public @sharded_value_and_grad_ids(
// CHECK-SAME:      %[[X:[^:]+]]: tensor<8x16xf32> {sdy.sharding = #sdy.sharding<@mesh, [{"data"}, {}]>}, %[[E:[^:]+]]: tensor<64x16xf32> {sdy.sharding = #sdy.sharding<@mesh, [{"model"}, {}]>}
// CHECK:         %[[FWD:[^:]+]]:4 = sdy.manual_computation(%[[X]], %[[E]],
// CHECK:         } {gshard.plan = "gshard-shard-vocab: vocab over ['model'] (4 shards), tokens over ['data']"}
// CHECK:         %[[GRAD:[^:]+]]:2 = sdy.manual_computation(%[[X]], %[[E]], %{{[^,]+}}, %[[FWD]]#2, %{{[^)]+}})
// CHECK-SAME:      in_shardings=[<@mesh, [{"data"}, {}]>, <@mesh, [{"model"}, {}]>, <@mesh, [{"data"}]>, <@mesh, [{"data"}]>, <@mesh, [{"data"}]>, <@mesh, [{"data"}]>, <@mesh, [{"data"}]>]
// CHECK-SAME:      out_shardings=[<@mesh, [{"data"}, {}]>, <@mesh, [{"model"}, {}]>]
// CHECK-SAME:      manual_axes={"data", "model"}
// CHECK-SAME:      (%[[XL:[^:]+]]: tensor<4x16xf32>, %[[EL:[^:]+]]: tensor<16x16xf32>, %{{[^:]+}}: tensor<4xi32>, %{{[^:]+}}: tensor<4xf32>,
// CHECK:           stablehlo.partition_id : tensor<ui32>
// d_x of the block and d_embedding of the shard, carried in float32.
// CHECK:           stablehlo.while(%[[ELA:[^ ]+]] = %[[EL]], {{.*}}) : {{.*}}tensor<i32>, tensor<4x16xf32>, tensor<16x16xf32>{{$}}
// CHECK:             stablehlo.dynamic_slice %[[ELA]], {{.*}} -> tensor<4x16xf32>
// CHECK:             stablehlo.dot_general {{.*}} : (tensor<4x16xf32>, tensor<4x16xf32>) -> tensor<4x4xf32>
// CHECK:             stablehlo.dot_general {{.*}} contracting_dims = [1] x [0]{{.*}} : (tensor<4x4xf32>, tensor<4x16xf32>) -> tensor<4x16xf32>
// CHECK:             stablehlo.dot_general {{.*}} contracting_dims = [0] x [0]{{.*}} : (tensor<4x4xf32>, tensor<4x16xf32>) -> tensor<4x16xf32>
// Each chunk's d_embedding rows summed over the token shards ("data") right away:
// no [V_local, M] collective buffer.
// CHECK:             "stablehlo.all_reduce"(%{{[^)]+}}) <{channel_handle = #stablehlo.channel_handle<handle = 5, type = 1>, replica_groups = dense<{{\[\[}}0, 4], [1, 5], [2, 6], [3, 7]]> : tensor<4x2xi64>, use_global_device_ids}> ({
// CHECK:               stablehlo.add
// CHECK:             }) : (tensor<4x16xf32>) -> tensor<4x16xf32>
// CHECK:             stablehlo.dynamic_update_slice {{.*}} -> tensor<16x16xf32>
// CHECK:             stablehlo.return
// CHECK:           }
// d_x summed over the vocab shards ("model").
// CHECK:           "stablehlo.all_reduce"(%{{[^)]+}}) <{channel_handle = #stablehlo.channel_handle<handle = 6, type = 1>, replica_groups = dense<{{\[\[}}0, 1, 2, 3], [4, 5, 6, 7]]> : tensor<2x4xi64>, use_global_device_ids}> ({
// CHECK:             stablehlo.add
// CHECK:           }) : (tensor<4x16xf32>) -> tensor<4x16xf32>
// CHECK-NOT:       "stablehlo.all_reduce"
// CHECK:           sdy.return {{.*}} : tensor<4x16xf32>, tensor<16x16xf32>
// CHECK:         } {gshard.plan = "gshard-shard-vocab: vocab over ['model'] (4 shards), tokens over ['data']"} : {{.*}} -> (tensor<8x16xf32>, tensor<64x16xf32>)
// CHECK:         return {{.*}}, %[[GRAD]]#0, %[[GRAD]]#1 : tensor<f32>, tensor<8x16xf32>, tensor<64x16xf32>

sdy.mesh @mesh = <["data"=2, "model"=4]> {stablehlo.mesh = {axes = [{name = "data", size = 2 : i64}, {name = "model", size = 4 : i64}]}}
func.func public @sharded_forward_ids(%arg0: tensor<8x16xf32> {sdy.sharding = #sdy.sharding<@mesh, [{"data"}, {}]>}, %arg1: tensor<64x16xf32> {sdy.sharding = #sdy.sharding<@mesh, [{"model"}, {}]>}, %arg2: tensor<8x1xf32> {sdy.sharding = #sdy.sharding<@mesh, [{"data"}, {}]>}, %arg3: tensor<8x1xi32> {sdy.sharding = #sdy.sharding<@mesh, [{"data"}, {}]>}) -> (tensor<f32>, tensor<8xi32>) {
  %0 = stablehlo.reshape %arg3 : (tensor<8x1xi32>) -> tensor<8xi32>
  %1 = stablehlo.reshape %arg2 : (tensor<8x1xf32>) -> tensor<8xf32>
  %2:4 = stablehlo.composite "gshard.shared_embedding_softmax" %arg0, %arg1, %0 {composite_attributes = {label_smoothing_prob = 1.000000e-01 : f64, logit_scale = 2.500000e-01 : f64, logits_abs_max = 0.000000e+00 : f64, soft_cap_logits = 0.000000e+00 : f64, use_tgt_labels_size_as_loss_denominator = true, z_loss_weight = 1.000000e-04 : f64}, decomposition = @gshard.shared_embedding_softmax, version = 1 : i32} : (tensor<8x16xf32>, tensor<64x16xf32>, tensor<8xi32>) -> (tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>)
  %3 = stablehlo.multiply %2#0, %1 : tensor<8xf32>
  %cst = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %4 = stablehlo.reduce(%3 init: %cst) applies stablehlo.add across dimensions = [0] : (tensor<8xf32>, tensor<f32>) -> tensor<f32>
  %5 = stablehlo.multiply %2#3, %1 : tensor<8xf32>
  %cst_0 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %6 = stablehlo.reduce(%5 init: %cst_0) applies stablehlo.add across dimensions = [0] : (tensor<8xf32>, tensor<f32>) -> tensor<f32>
  %cst_1 = stablehlo.constant dense<9.99999974E-5> : tensor<f32>
  %7 = stablehlo.multiply %cst_1, %6 : tensor<f32>
  %cst_2 = stablehlo.constant dense<8.000000e+00> : tensor<f32>
  %8 = stablehlo.divide %7, %cst_2 : tensor<f32>
  %cst_3 = stablehlo.constant dense<8.000000e+00> : tensor<f32>
  %9 = stablehlo.divide %4, %cst_3 : tensor<f32>
  %10 = stablehlo.add %9, %8 : tensor<f32>
  return %10, %2#1 : tensor<f32>, tensor<8xi32>
}
func.func private @gshard.shared_embedding_softmax(%arg0: tensor<8x16xf32>, %arg1: tensor<64x16xf32>, %arg2: tensor<8xi32>) -> (tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>) {
  %cst = stablehlo.constant dense<2.500000e-01> : tensor<f32>
  %0 = stablehlo.broadcast_in_dim %cst, dims = [] : (tensor<f32>) -> tensor<8x16xf32>
  %1 = stablehlo.multiply %arg0, %0 : tensor<8x16xf32>
  %2 = stablehlo.dot_general %1, %arg1, contracting_dims = [1] x [1], precision = [DEFAULT, DEFAULT] : (tensor<8x16xf32>, tensor<64x16xf32>) -> tensor<8x64xf32>
  %cst_0 = stablehlo.constant dense<0xFF800000> : tensor<f32>
  %3 = stablehlo.reduce(%2 init: %cst_0) applies stablehlo.maximum across dimensions = [1] : (tensor<8x64xf32>, tensor<f32>) -> tensor<8xf32>
  %cst_1 = stablehlo.constant dense<0xFF800000> : tensor<f32>
  %4 = stablehlo.broadcast_in_dim %cst_1, dims = [] : (tensor<f32>) -> tensor<8xf32>
  %5 = stablehlo.maximum %4, %3 : tensor<8xf32>
  %6 = stablehlo.is_finite %5 : (tensor<8xf32>) -> tensor<8xi1>
  %cst_2 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %7 = stablehlo.broadcast_in_dim %cst_2, dims = [] : (tensor<f32>) -> tensor<8xf32>
  %8 = stablehlo.select %6, %5, %7 : tensor<8xi1>, tensor<8xf32>
  %9 = stablehlo.broadcast_in_dim %8, dims = [0] : (tensor<8xf32>) -> tensor<8x1xf32>
  %10 = stablehlo.broadcast_in_dim %9, dims = [0, 1] : (tensor<8x1xf32>) -> tensor<8x64xf32>
  %11 = stablehlo.subtract %2, %10 : tensor<8x64xf32>
  %12 = stablehlo.exponential %11 : tensor<8x64xf32>
  %cst_3 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %13 = stablehlo.reduce(%12 init: %cst_3) applies stablehlo.add across dimensions = [1] : (tensor<8x64xf32>, tensor<f32>) -> tensor<8xf32>
  %14 = stablehlo.sign %13 : tensor<8xf32>
  %15 = stablehlo.abs %13 : tensor<8xf32>
  %16 = stablehlo.log %15 : tensor<8xf32>
  %17 = stablehlo.add %16, %8 : tensor<8xf32>
  %18 = stablehlo.broadcast_in_dim %17, dims = [0] : (tensor<8xf32>) -> tensor<8x1xf32>
  %19 = stablehlo.broadcast_in_dim %18, dims = [0, 1] : (tensor<8x1xf32>) -> tensor<8x64xf32>
  %20 = stablehlo.subtract %2, %19 : tensor<8x64xf32>
  %21 = call @_one_hot(%arg2) : (tensor<8xi32>) -> tensor<8x64xf32>
  %cst_4 = stablehlo.constant dense<0.899999976> : tensor<f32>
  %22 = stablehlo.broadcast_in_dim %cst_4, dims = [] : (tensor<f32>) -> tensor<8x64xf32>
  %23 = stablehlo.multiply %22, %21 : tensor<8x64xf32>
  %cst_5 = stablehlo.constant dense<1.562500e-03> : tensor<f32>
  %24 = stablehlo.broadcast_in_dim %cst_5, dims = [] : (tensor<f32>) -> tensor<8x64xf32>
  %25 = stablehlo.add %23, %24 : tensor<8x64xf32>
  %26 = stablehlo.multiply %20, %25 : tensor<8x64xf32>
  %cst_6 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %27 = stablehlo.reduce(%26 init: %cst_6) applies stablehlo.add across dimensions = [1] : (tensor<8x64xf32>, tensor<f32>) -> tensor<8xf32>
  %28 = stablehlo.negate %27 : tensor<8xf32>
  %29 = call @argmax(%2) : (tensor<8x64xf32>) -> tensor<8xi32>
  %30 = stablehlo.multiply %17, %17 : tensor<8xf32>
  return %28, %29, %17, %30 : tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>
}
func.func private @_one_hot(%arg0: tensor<8xi32>) -> tensor<8x64xf32> {
  %0 = stablehlo.broadcast_in_dim %arg0, dims = [0] : (tensor<8xi32>) -> tensor<8x1xi32>
  %1 = stablehlo.iota dim = 1 : tensor<1x64xi32>
  %2 = stablehlo.broadcast_in_dim %0, dims = [0, 1] : (tensor<8x1xi32>) -> tensor<8x64xi32>
  %3 = stablehlo.broadcast_in_dim %1, dims = [0, 1] : (tensor<1x64xi32>) -> tensor<8x64xi32>
  %4 = stablehlo.compare EQ, %2, %3, SIGNED : (tensor<8x64xi32>, tensor<8x64xi32>) -> tensor<8x64xi1>
  %5 = stablehlo.convert %4 : (tensor<8x64xi1>) -> tensor<8x64xf32>
  return %5 : tensor<8x64xf32>
}
func.func private @argmax(%arg0: tensor<8x64xf32>) -> tensor<8xi32> {
  %0 = stablehlo.iota dim = 1 : tensor<8x64xi32>
  %cst = stablehlo.constant dense<0xFF800000> : tensor<f32>
  %c = stablehlo.constant dense<0> : tensor<i32>
  %1:2 = stablehlo.reduce(%arg0 init: %cst), (%0 init: %c) across dimensions = [1] : (tensor<8x64xf32>, tensor<8x64xi32>, tensor<f32>, tensor<i32>) -> (tensor<8xf32>, tensor<8xi32>)
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
// -----

sdy.mesh @mesh = <["data"=2, "model"=4]> {stablehlo.mesh = {axes = [{name = "data", size = 2 : i64}, {name = "model", size = 4 : i64}]}}
func.func public @sharded_value_and_grad_ids(%arg0: tensor<8x16xf32> {sdy.sharding = #sdy.sharding<@mesh, [{"data"}, {}]>}, %arg1: tensor<64x16xf32> {sdy.sharding = #sdy.sharding<@mesh, [{"model"}, {}]>}, %arg2: tensor<8x1xf32> {sdy.sharding = #sdy.sharding<@mesh, [{"data"}, {}]>}, %arg3: tensor<8x1xi32> {sdy.sharding = #sdy.sharding<@mesh, [{"data"}, {}]>}) -> (tensor<f32>, tensor<8x16xf32>, tensor<64x16xf32>) {
  %0 = stablehlo.reshape %arg3 : (tensor<8x1xi32>) -> tensor<8xi32>
  %1 = stablehlo.reshape %arg2 : (tensor<8x1xf32>) -> tensor<8xf32>
  %2:4 = stablehlo.composite "gshard.shared_embedding_softmax" %arg0, %arg1, %0 {composite_attributes = {label_smoothing_prob = 0.000000e+00 : f64, logit_scale = 2.500000e-01 : f64, logits_abs_max = 0.000000e+00 : f64, soft_cap_logits = 0.000000e+00 : f64, use_tgt_labels_size_as_loss_denominator = true, z_loss_weight = 0.000000e+00 : f64}, decomposition = @gshard.shared_embedding_softmax, version = 1 : i32} : (tensor<8x16xf32>, tensor<64x16xf32>, tensor<8xi32>) -> (tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>)
  %3 = stablehlo.multiply %2#0, %1 : tensor<8xf32>
  %cst = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %4 = stablehlo.reduce(%3 init: %cst) applies stablehlo.add across dimensions = [0] : (tensor<8xf32>, tensor<f32>) -> tensor<f32>
  %cst_0 = stablehlo.constant dense<8.000000e+00> : tensor<f32>
  %5 = stablehlo.divide %4, %cst_0 : tensor<f32>
  %cst_1 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %6 = stablehlo.add %5, %cst_1 : tensor<f32>
  %cst_2 = stablehlo.constant dense<1.000000e+00> : tensor<f32>
  %cst_3 = stablehlo.constant dense<8.000000e+00> : tensor<f32>
  %7 = stablehlo.divide %cst_2, %cst_3 : tensor<f32>
  %8 = stablehlo.broadcast_in_dim %7, dims = [] : (tensor<f32>) -> tensor<8xf32>
  %9 = stablehlo.multiply %8, %1 : tensor<8xf32>
  %cst_4 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %10 = stablehlo.broadcast_in_dim %cst_4, dims = [] : (tensor<f32>) -> tensor<8xf32>
  %cst_5 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %11 = stablehlo.broadcast_in_dim %cst_5, dims = [] : (tensor<f32>) -> tensor<8xf32>
  %12:2 = stablehlo.composite "gshard.shared_embedding_softmax_grad" %arg0, %arg1, %0, %2#2, %9, %10, %11 {composite_attributes = {label_smoothing_prob = 0.000000e+00 : f64, logit_scale = 2.500000e-01 : f64, logits_abs_max = 0.000000e+00 : f64, soft_cap_logits = 0.000000e+00 : f64, use_tgt_labels_size_as_loss_denominator = true, z_loss_weight = 0.000000e+00 : f64}, decomposition = @gshard.shared_embedding_softmax_grad, version = 1 : i32} : (tensor<8x16xf32>, tensor<64x16xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) -> (tensor<8x16xf32>, tensor<64x16xf32>)
  return %6, %12#0, %12#1 : tensor<f32>, tensor<8x16xf32>, tensor<64x16xf32>
}
func.func private @gshard.shared_embedding_softmax(%arg0: tensor<8x16xf32>, %arg1: tensor<64x16xf32>, %arg2: tensor<8xi32>) -> (tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>) {
  %cst = stablehlo.constant dense<2.500000e-01> : tensor<f32>
  %0 = stablehlo.broadcast_in_dim %cst, dims = [] : (tensor<f32>) -> tensor<8x16xf32>
  %1 = stablehlo.multiply %arg0, %0 : tensor<8x16xf32>
  %2 = stablehlo.dot_general %1, %arg1, contracting_dims = [1] x [1], precision = [DEFAULT, DEFAULT] : (tensor<8x16xf32>, tensor<64x16xf32>) -> tensor<8x64xf32>
  %cst_0 = stablehlo.constant dense<0xFF800000> : tensor<f32>
  %3 = stablehlo.reduce(%2 init: %cst_0) applies stablehlo.maximum across dimensions = [1] : (tensor<8x64xf32>, tensor<f32>) -> tensor<8xf32>
  %cst_1 = stablehlo.constant dense<0xFF800000> : tensor<f32>
  %4 = stablehlo.broadcast_in_dim %cst_1, dims = [] : (tensor<f32>) -> tensor<8xf32>
  %5 = stablehlo.maximum %4, %3 : tensor<8xf32>
  %6 = stablehlo.is_finite %5 : (tensor<8xf32>) -> tensor<8xi1>
  %cst_2 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %7 = stablehlo.broadcast_in_dim %cst_2, dims = [] : (tensor<f32>) -> tensor<8xf32>
  %8 = stablehlo.select %6, %5, %7 : tensor<8xi1>, tensor<8xf32>
  %9 = stablehlo.broadcast_in_dim %8, dims = [0] : (tensor<8xf32>) -> tensor<8x1xf32>
  %10 = stablehlo.broadcast_in_dim %9, dims = [0, 1] : (tensor<8x1xf32>) -> tensor<8x64xf32>
  %11 = stablehlo.subtract %2, %10 : tensor<8x64xf32>
  %12 = stablehlo.exponential %11 : tensor<8x64xf32>
  %cst_3 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %13 = stablehlo.reduce(%12 init: %cst_3) applies stablehlo.add across dimensions = [1] : (tensor<8x64xf32>, tensor<f32>) -> tensor<8xf32>
  %14 = stablehlo.sign %13 : tensor<8xf32>
  %15 = stablehlo.abs %13 : tensor<8xf32>
  %16 = stablehlo.log %15 : tensor<8xf32>
  %17 = stablehlo.add %16, %8 : tensor<8xf32>
  %18 = stablehlo.broadcast_in_dim %17, dims = [0] : (tensor<8xf32>) -> tensor<8x1xf32>
  %19 = stablehlo.broadcast_in_dim %18, dims = [0, 1] : (tensor<8x1xf32>) -> tensor<8x64xf32>
  %20 = stablehlo.subtract %2, %19 : tensor<8x64xf32>
  %21 = call @_one_hot(%arg2) : (tensor<8xi32>) -> tensor<8x64xf32>
  %22 = stablehlo.multiply %20, %21 : tensor<8x64xf32>
  %cst_4 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %23 = stablehlo.reduce(%22 init: %cst_4) applies stablehlo.add across dimensions = [1] : (tensor<8x64xf32>, tensor<f32>) -> tensor<8xf32>
  %24 = stablehlo.negate %23 : tensor<8xf32>
  %25 = call @argmax(%2) : (tensor<8x64xf32>) -> tensor<8xi32>
  %26 = stablehlo.multiply %17, %17 : tensor<8xf32>
  return %24, %25, %17, %26 : tensor<8xf32>, tensor<8xi32>, tensor<8xf32>, tensor<8xf32>
}
func.func private @_one_hot(%arg0: tensor<8xi32>) -> tensor<8x64xf32> {
  %0 = stablehlo.broadcast_in_dim %arg0, dims = [0] : (tensor<8xi32>) -> tensor<8x1xi32>
  %1 = stablehlo.iota dim = 1 : tensor<1x64xi32>
  %2 = stablehlo.broadcast_in_dim %0, dims = [0, 1] : (tensor<8x1xi32>) -> tensor<8x64xi32>
  %3 = stablehlo.broadcast_in_dim %1, dims = [0, 1] : (tensor<1x64xi32>) -> tensor<8x64xi32>
  %4 = stablehlo.compare EQ, %2, %3, SIGNED : (tensor<8x64xi32>, tensor<8x64xi32>) -> tensor<8x64xi1>
  %5 = stablehlo.convert %4 : (tensor<8x64xi1>) -> tensor<8x64xf32>
  return %5 : tensor<8x64xf32>
}
func.func private @argmax(%arg0: tensor<8x64xf32>) -> tensor<8xi32> {
  %0 = stablehlo.iota dim = 1 : tensor<8x64xi32>
  %cst = stablehlo.constant dense<0xFF800000> : tensor<f32>
  %c = stablehlo.constant dense<0> : tensor<i32>
  %1:2 = stablehlo.reduce(%arg0 init: %cst), (%0 init: %c) across dimensions = [1] : (tensor<8x64xf32>, tensor<8x64xi32>, tensor<f32>, tensor<i32>) -> (tensor<8xf32>, tensor<8xi32>)
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
func.func private @gshard.shared_embedding_softmax_grad(%arg0: tensor<8x16xf32>, %arg1: tensor<64x16xf32>, %arg2: tensor<8xi32>, %arg3: tensor<8xf32>, %arg4: tensor<8xf32>, %arg5: tensor<8xf32>, %arg6: tensor<8xf32>) -> (tensor<8x16xf32>, tensor<64x16xf32>) {
  %cst = stablehlo.constant dense<2.500000e-01> : tensor<f32>
  %0 = stablehlo.broadcast_in_dim %cst, dims = [] : (tensor<f32>) -> tensor<8x16xf32>
  %1 = stablehlo.multiply %arg0, %0 : tensor<8x16xf32>
  %2 = stablehlo.dot_general %1, %arg1, contracting_dims = [1] x [1], precision = [DEFAULT, DEFAULT] : (tensor<8x16xf32>, tensor<64x16xf32>) -> tensor<8x64xf32>
  %3 = stablehlo.broadcast_in_dim %arg3, dims = [0] : (tensor<8xf32>) -> tensor<8x1xf32>
  %4 = stablehlo.broadcast_in_dim %3, dims = [0, 1] : (tensor<8x1xf32>) -> tensor<8x64xf32>
  %5 = stablehlo.subtract %2, %4 : tensor<8x64xf32>
  %6 = stablehlo.exponential %5 : tensor<8x64xf32>
  %7 = call @_one_hot(%arg2) : (tensor<8xi32>) -> tensor<8x64xf32>
  %cst_0 = stablehlo.constant dense<0.000000e+00> : tensor<f32>
  %8 = stablehlo.reduce(%7 init: %cst_0) applies stablehlo.add across dimensions = [1] : (tensor<8x64xf32>, tensor<f32>) -> tensor<8xf32>
  %9 = stablehlo.broadcast_in_dim %8, dims = [0] : (tensor<8xf32>) -> tensor<8x1xf32>
  %cst_1 = stablehlo.constant dense<2.000000e+00> : tensor<f32>
  %10 = stablehlo.broadcast_in_dim %cst_1, dims = [] : (tensor<f32>) -> tensor<8xf32>
  %11 = stablehlo.multiply %10, %arg3 : tensor<8xf32>
  %12 = stablehlo.multiply %11, %arg6 : tensor<8xf32>
  %13 = stablehlo.add %arg5, %12 : tensor<8xf32>
  %14 = stablehlo.broadcast_in_dim %13, dims = [0] : (tensor<8xf32>) -> tensor<8x1xf32>
  %15 = stablehlo.broadcast_in_dim %arg4, dims = [0] : (tensor<8xf32>) -> tensor<8x1xf32>
  %16 = stablehlo.broadcast_in_dim %9, dims = [0, 1] : (tensor<8x1xf32>) -> tensor<8x64xf32>
  %17 = stablehlo.multiply %6, %16 : tensor<8x64xf32>
  %18 = stablehlo.subtract %17, %7 : tensor<8x64xf32>
  %19 = stablehlo.broadcast_in_dim %15, dims = [0, 1] : (tensor<8x1xf32>) -> tensor<8x64xf32>
  %20 = stablehlo.multiply %19, %18 : tensor<8x64xf32>
  %21 = stablehlo.broadcast_in_dim %14, dims = [0, 1] : (tensor<8x1xf32>) -> tensor<8x64xf32>
  %22 = stablehlo.multiply %21, %6 : tensor<8x64xf32>
  %23 = stablehlo.add %20, %22 : tensor<8x64xf32>
  %24 = stablehlo.dot_general %23, %arg1, contracting_dims = [1] x [0], precision = [DEFAULT, DEFAULT] : (tensor<8x64xf32>, tensor<64x16xf32>) -> tensor<8x16xf32>
  %cst_2 = stablehlo.constant dense<2.500000e-01> : tensor<f32>
  %25 = stablehlo.broadcast_in_dim %cst_2, dims = [] : (tensor<f32>) -> tensor<8x16xf32>
  %26 = stablehlo.multiply %25, %24 : tensor<8x16xf32>
  %cst_3 = stablehlo.constant dense<2.500000e-01> : tensor<f32>
  %27 = stablehlo.broadcast_in_dim %cst_3, dims = [] : (tensor<f32>) -> tensor<8x16xf32>
  %28 = stablehlo.multiply %arg0, %27 : tensor<8x16xf32>
  %29 = stablehlo.dot_general %23, %28, contracting_dims = [0] x [0], precision = [DEFAULT, DEFAULT] : (tensor<8x64xf32>, tensor<8x16xf32>) -> tensor<64x16xf32>
  return %26, %29 : tensor<8x16xf32>, tensor<64x16xf32>
}
