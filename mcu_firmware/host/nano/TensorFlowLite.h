// Stand-in for the Arduino library's umbrella header: the TFLM tree is on the include path instead.
#ifndef KWS_HOST_TENSORFLOWLITE_H_
#define KWS_HOST_TENSORFLOWLITE_H_
#endif  // KWS_HOST_TENSORFLOWLITE_H_
