// Stand-in for the arduino:mbed_nano core's PDM library header, with the calls the sketch makes, for
// compiling the sketch's board code without the core (tests/test_firmware_nano_compile.py). Not linked.
#ifndef KWS_HOST_PDM_H_
#define KWS_HOST_PDM_H_

#include <stddef.h>

class PDMClass {
 public:
  int begin(int channels, int sample_rate);
  void end();
  int available();
  int read(void* buffer, size_t size);
  void onReceive(void (*function)(void));
  void setGain(int gain);
  void setBufferSize(int size);
};

extern PDMClass PDM;

#endif  // KWS_HOST_PDM_H_
