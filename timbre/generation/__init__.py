"""The cached autoregressive decoding engine (Fast WaveNet ring buffers) and its native kernel."""
