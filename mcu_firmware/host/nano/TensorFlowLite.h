// Umbrella header of the TensorFlow Lite Micro Arduino library that kws-edge flash builds from a TFLM tree
// (make nano-lib ships this file as src/TensorFlowLite.h; the QEMU and compile-only builds include it from
// here). The sketch includes it first so that arduino-cli picks the library and adds -I<library>/src, from
// where "tensorflow/lite/..." resolves. The library was compiled with the flags checked below; a sketch
// compiled without them would lay out TfLiteTensor differently, or not parse TFLM's headers at all.
#ifndef KWS_TENSORFLOWLITE_H_
#define KWS_TENSORFLOWLITE_H_

#if __cplusplus < 201703L
#error "TensorFlow Lite Micro needs C++17: arduino-cli compile --build-property \"compiler.cpp.extra_flags=-std=gnu++17 -DTF_LITE_STATIC_MEMORY -DCMSIS_NN\" (kws-edge flash passes it)"
#endif

#ifndef TF_LITE_STATIC_MEMORY
#error "the TFLM library was built with -DTF_LITE_STATIC_MEMORY: arduino-cli compile --build-property \"compiler.cpp.extra_flags=-std=gnu++17 -DTF_LITE_STATIC_MEMORY -DCMSIS_NN\" (kws-edge flash passes it)"
#endif

#endif  // KWS_TENSORFLOWLITE_H_
