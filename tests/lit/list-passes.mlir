// RUN: gshard-opt --list-passes | FileCheck %s

// Every registered gshard pass, sorted, with its summary and its options as
// `name=default  (type)` and a note; then what 0 means and the memory budget the
// default pipeline uses on this machine (the CPU here: 64 MiB). This file holds no IR.

// CHECK-LABEL: gshard passes:
// CHECK:         gshard-chunk-softmax  {{.+}}
// CHECK-NEXT:        vocab-chunk={{[0-9]+}}  (int)  0: automatic
// CHECK-NEXT:        token-chunk={{[0-9]+}}  (int)  0: automatic
// CHECK-NEXT:        memory-budget-mib=0.0  (float)  0: automatic (here 64.0 MiB)
// CHECK:         gshard-inline  Replace gshard composites by calls to their decomposition
// CHECK-NEXT:        (no options)
// CHECK:       0 means automatic: chunk and token-block sizes come from memory-budget-mib,
// CHECK:       Default budget here (cpu): 64.0 MiB of float32 [tokens, classes] buffers
// CHECK:       Other pipeline names are looked up in MLIR's registry
