"""kws_edge: private, on-device keyword spotting for Raspberry Pi and Arduino Nano 33 BLE Sense."""

__version__ = "0.1.0"
