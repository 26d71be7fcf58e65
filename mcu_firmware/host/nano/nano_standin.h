// Control of the board stand-ins from the QEMU program (kws_fw_main.cpp).
#ifndef KWS_HOST_NANO_STANDIN_H_
#define KWS_HOST_NANO_STANDIN_H_

#include <stdint.h>

namespace kws_standin {

// The "microphone": raw int16 little-endian mono samples from a host file (semihosting), handed out as
// fast as the sketch reads them (AudioBacklog() is 0: the sketch never has to skip a run to catch up).
bool OpenAudio(const char* path);
bool AudioDone();           // the whole file has been handed out
uint64_t SamplesRead();
int AudioSampleRate();      // as passed to AudioBegin (0 before)

}  // namespace kws_standin

#endif  // KWS_HOST_NANO_STANDIN_H_
