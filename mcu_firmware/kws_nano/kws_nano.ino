// kws_edge keyword spotting for the Arduino Nano 33 BLE Sense (core arduino:mbed_nano; TensorFlow Lite Micro
// as the precompiled library kws-edge flash builds from a TFLM tree and passes with --library, C++17; not
// Arduino_TensorFlowLite). setup() and loop() live in main_functions.cpp; see ../README.md.
// The model files (model_settings.h, model_ops.h, model_data.*) are generated: kws-edge flash --model NAME
#include <PDM.h>
#include <TensorFlowLite.h>

#include "main_functions.h"
