// Audio in: the Nano 33 BLE Sense's PDM microphone at the model's sample rate into a ring buffer.
// Board code (Arduino PDM library of the arduino:mbed_nano core).
#ifndef KWS_AUDIO_PROVIDER_H_
#define KWS_AUDIO_PROVIDER_H_

#include <stdint.h>

namespace kws {

constexpr int kAudioRingSamples = 8000;  // 0.5 s at 16 kHz: loop() may stall this long before samples drop

// Starts the microphone (mono, sample_rate Hz, default gain); false if the PDM peripheral refused.
bool AudioBegin(int sample_rate);
// Copies up to max_samples of the oldest unread samples into dst; returns how many.
int AudioRead(int16_t* dst, int max_samples);
// Samples received but not yet read (how far loop() is behind the microphone).
int AudioBacklog();
// Samples lost because the ring buffer was full, since AudioBegin.
uint32_t AudioDropped();

}  // namespace kws

#endif  // KWS_AUDIO_PROVIDER_H_
