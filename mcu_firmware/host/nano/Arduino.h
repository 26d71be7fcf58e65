// Stand-in for the Arduino core's Arduino.h, for running the sketch on QEMU mps2-an386 (no board here).
// Only what the sketch uses: millis(), Serial.begin/write, pinMode/digitalWrite and the Nano 33 BLE Sense's
// LED pin names. See nano_standins.cpp for what each does.
#ifndef KWS_HOST_ARDUINO_H_
#define KWS_HOST_ARDUINO_H_

#include <stddef.h>
#include <stdint.h>

enum { LOW = 0, HIGH = 1 };
enum { INPUT = 0, OUTPUT = 1 };
enum { LED_BUILTIN = 13, LEDR = 22, LEDG = 23, LEDB = 24 };

// Stream time in ms: the samples the stand-in audio_provider has handed out so far (deterministic).
uint32_t millis();
void pinMode(int pin, int mode);
void digitalWrite(int pin, int value);

// USB serial: every byte written goes to the program's stdout (semihosting).
class SerialPort {
 public:
  void begin(unsigned long baud);
  size_t write(const char* data, size_t length);
  size_t write(const uint8_t* data, size_t length);
};
extern SerialPort Serial;

#endif  // KWS_HOST_ARDUINO_H_
