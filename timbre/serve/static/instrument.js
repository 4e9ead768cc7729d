// timbre live pad: drag the puck between four timbres, play from the screen, the computer keyboard
// or a MIDI keyboard. Every note is synthesized by the server (POST /api/v1/note) for the current
// pad position and pitch, decoded with Web Audio and kept in a client cache, so replaying a note at
// the same place costs nothing. No build step, no dependencies, nothing fetched beyond this server.
"use strict";

(() => {
  const API = "/api/v1";
  // Notes are fetched at the corners' reference velocity; key velocity becomes a gain here, so one
  // cached note serves every velocity (General MIDI curve, (v / 127)^2, relative to 100).
  const REFERENCE_VELOCITY = 100;
  // The pad is resolved to 1/100 of its side in the cache key: finer moves are inaudible.
  const PAD_STEPS = 100;
  const CLIENT_CACHE_NOTES = 256;
  const RELEASE_SECONDS = 0.08; // time constant of a voice's release on note-off
  const COMPUTER_KEYS = ["KeyA", "KeyW", "KeyS", "KeyE", "KeyD", "KeyF", "KeyT", "KeyG", "KeyY", "KeyH",
    "KeyU", "KeyJ", "KeyK", "KeyO", "KeyL", "KeyP", "Semicolon", "Quote"];
  const KEYBOARD_OCTAVES = 2;

  // Everything a test (or a curious user in the console) may want to look at.
  const state = {
    ready: false,
    sampleRate: 16000,
    position: { x: 0.5, y: 0.5 },
    corners: [],
    weighting: "nsynth",
    seconds: 2,
    octave: 4,
    sustain: false,
    requests: [],      // bodies of the note requests sent to the server
    decoded: [],       // one entry per AudioBuffer decoded: {pitch, length, sampleRate, duration, origin}
    played: [],        // one entry per voice started: {pitch, velocity, latencyMs, source}
    voices: 0,
    lastLatencyMs: null,
    midi: "not checked",
    errors: [],
  };
  window.timbreState = state;

  const $ = (id) => document.getElementById(id);
  const noteCache = new Map();  // key -> Promise<{buffer, serverMs, origin}>, oldest first
  const voices = new Map();     // pitch -> voice
  let context = null;
  let master = null;

  // ------------------------------------------------------------------ audio

  function audio() {
    if (!context) {
      // At the model's rate, so the decoded buffer is the server's samples, not a resampling.
      try {
        context = new AudioContext({ sampleRate: state.sampleRate, latencyHint: "interactive" });
      } catch (error) {
        context = new AudioContext({ latencyHint: "interactive" });
      }
      // A limiter: several loud voices must not clip the output.
      master = context.createDynamicsCompressor();
      master.threshold.value = -6;
      master.ratio.value = 12;
      master.connect(context.destination);
    }
    if (context.state === "suspended") context.resume();
    return context;
  }

  function velocityGain(velocity) {
    return (velocity / REFERENCE_VELOCITY) ** 2;
  }

  function noteKey(pitch) {
    const { x, y } = quantizedPosition();
    return [state.corners.join(","), state.weighting, state.seconds, x, y, pitch].join("|");
  }

  function quantizedPosition() {
    return {
      x: Math.round(state.position.x * PAD_STEPS) / PAD_STEPS,
      y: Math.round(state.position.y * PAD_STEPS) / PAD_STEPS,
    };
  }

  function fetchNote(pitch) {
    const key = noteKey(pitch);
    const cached = noteCache.get(key);
    if (cached) {
      noteCache.delete(key);  // re-inserted: most recently used last
      noteCache.set(key, cached);
      return cached.then((note) => ({ ...note, origin: "client" }));
    }
    const { x, y } = quantizedPosition();
    const body = { x, y, pitch, velocity: REFERENCE_VELOCITY, seconds: state.seconds,
      corners: state.corners, weighting: state.weighting };
    state.requests.push(body);
    const promise = (async () => {
      const response = await fetch(`${API}/note`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      if (!response.ok) {
        const problem = await response.json().catch(() => ({ error: response.statusText }));
        throw new Error(`note ${pitch}: ${problem.error}`);
      }
      const serverMs = parseFloat((response.headers.get("server-timing") || "").split("dur=")[1]);
      const origin = response.headers.get("x-timbre-cache") || "miss";
      const buffer = await audio().decodeAudioData(await response.arrayBuffer());
      state.decoded.push({ pitch, length: buffer.length, sampleRate: buffer.sampleRate,
        duration: buffer.duration, channels: buffer.numberOfChannels, origin });
      return { buffer, serverMs, origin };
    })();
    noteCache.set(key, promise);
    promise.catch(() => noteCache.delete(key));
    while (noteCache.size > CLIENT_CACHE_NOTES) noteCache.delete(noteCache.keys().next().value);
    return promise;
  }

  // ------------------------------------------------------------------ voices

  function noteOn(pitch, velocity, source) {
    if (!state.ready || pitch < 0 || pitch > 127) return;
    const previous = voices.get(pitch);
    if (previous) release(previous);
    const pressed = performance.now();
    const voice = { pitch, velocity, released: false, sustained: false, node: null, gain: null };
    voices.set(pitch, voice);
    showKey(pitch, true);
    updateVoices();
    fetchNote(pitch).then(({ buffer, serverMs, origin }) => {
      const ctx = audio();
      voice.node = ctx.createBufferSource();
      voice.node.buffer = buffer;
      voice.gain = ctx.createGain();
      voice.gain.gain.value = velocityGain(velocity);
      voice.node.connect(voice.gain).connect(master);
      voice.node.onended = () => {
        if (voices.get(pitch) === voice) voices.delete(pitch);
        if (!voices.has(pitch)) showKey(pitch, false);
        updateVoices();
      };
      voice.node.start();
      const latencyMs = performance.now() - pressed;
      state.lastLatencyMs = latencyMs;
      state.played.push({ pitch, velocity, latencyMs, source });
      showLatency(latencyMs, serverMs, origin, ctx);
      drawRainbowgram(buffer);
      // A key let go before its note arrived still sounds, briefly: a fast tap is a short note.
      if (voice.released) fadeOut(voice);
    }).catch((error) => {
      if (voices.get(pitch) === voice) voices.delete(pitch);
      showKey(pitch, false);
      updateVoices();
      reportError(error);
    });
  }

  function noteOff(pitch) {
    const voice = voices.get(pitch);
    if (!voice) return;
    if (state.sustain) {
      voice.sustained = true;
      return;
    }
    release(voice);
  }

  function release(voice) {
    voice.released = true;
    if (voices.get(voice.pitch) === voice) voices.delete(voice.pitch);
    showKey(voice.pitch, false);
    fadeOut(voice);
    updateVoices();
  }

  function fadeOut(voice) {
    if (!voice.node) return;  // it fades as soon as it starts
    const now = context.currentTime;
    voice.gain.gain.cancelScheduledValues(now);
    voice.gain.gain.setValueAtTime(voice.gain.gain.value, now);
    voice.gain.gain.setTargetAtTime(0, now, RELEASE_SECONDS);
    voice.node.stop(now + 8 * RELEASE_SECONDS);
  }

  function setSustain(on) {
    state.sustain = on;
    $("sustain").textContent = on ? "on" : "off";
    if (!on) for (const voice of [...voices.values()]) if (voice.sustained) release(voice);
  }

  function updateVoices() {
    state.voices = voices.size;
    $("voices").textContent = String(voices.size);
  }

  // ------------------------------------------------------------------ pad

  function setPosition(x, y) {
    state.position = { x: Math.min(1, Math.max(0, x)), y: Math.min(1, Math.max(0, y)) };
    const puck = $("puck");
    puck.style.left = `${state.position.x * 100}%`;
    puck.style.top = `${state.position.y * 100}%`;
    puck.setAttribute("aria-valuetext", `x ${state.position.x.toFixed(2)}, y ${state.position.y.toFixed(2)}`);
    $("position").textContent = `x ${state.position.x.toFixed(2)} · y ${state.position.y.toFixed(2)}`;
  }

  function setUpPad() {
    const pad = $("pad");
    const follow = (event) => {
      const box = pad.getBoundingClientRect();
      setPosition((event.clientX - box.left) / box.width, (event.clientY - box.top) / box.height);
    };
    pad.addEventListener("pointerdown", (event) => {
      if (event.target.tagName === "SELECT") return;
      pad.setPointerCapture(event.pointerId);
      follow(event);
    });
    pad.addEventListener("pointermove", (event) => {
      if (pad.hasPointerCapture(event.pointerId)) follow(event);
    });
    $("puck").addEventListener("keydown", (event) => {
      const step = 0.05;
      const moves = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] };
      if (!(event.key in moves)) return;
      event.preventDefault();
      event.stopPropagation();
      setPosition(state.position.x + moves[event.key][0], state.position.y + moves[event.key][1]);
    });
  }

  function setUpCorners(info) {
    state.corners = info.corners.map((corner) => corner.name);
    for (const select of document.querySelectorAll("select.corner")) {
      const index = Number(select.dataset.corner);
      for (const timbre of info.timbres) {
        const option = document.createElement("option");
        option.value = timbre.name;
        option.textContent = timbre.name.replaceAll("_", " ");
        select.append(option);
      }
      if (![...select.options].some((option) => option.value === state.corners[index])) {
        const option = document.createElement("option");
        option.value = option.textContent = state.corners[index];  // a corner of the server's own
        select.append(option);
      }
      select.value = state.corners[index];
      select.addEventListener("change", () => { state.corners[index] = select.value; select.blur(); });
    }
  }

  // ------------------------------------------------------------------ keyboards

  function basePitch() {
    return 12 * (state.octave + 1);  // octave 4 starts at middle C, MIDI 60
  }

  function drawScreenKeys() {
    const keyboard = $("keyboard");
    keyboard.replaceChildren();
    let lastWhite = null;
    for (let offset = 0; offset <= 12 * KEYBOARD_OCTAVES; offset++) {
      const pitch = basePitch() + offset;
      const black = [1, 3, 6, 8, 10].includes(offset % 12);
      const key = document.createElement("div");
      key.className = black ? "key black" : "key";
      key.dataset.pitch = String(pitch);
      if (offset % 12 === 0) key.textContent = `C${Math.floor(pitch / 12) - 1}`;
      if (black) {
        key.style.right = "-15px";
        key.style.top = "0";
        lastWhite.append(key);
      } else {
        keyboard.append(key);
        lastWhite = key;
      }
    }
    for (const pitch of voices.keys()) showKey(pitch, true);
  }

  function setUpScreenKeyboard() {
    const keyboard = $("keyboard");
    drawScreenKeys();
    const held = new Map();  // pointerId -> pitch
    keyboard.addEventListener("pointerdown", (event) => {
      const pitch = Number(event.target.dataset.pitch);
      if (Number.isNaN(pitch)) return;
      event.preventDefault();
      keyboard.setPointerCapture(event.pointerId);
      held.set(event.pointerId, pitch);
      noteOn(pitch, Number($("velocity").value), "screen");
    });
    const up = (event) => {
      if (!held.has(event.pointerId)) return;
      noteOff(held.get(event.pointerId));
      held.delete(event.pointerId);
    };
    keyboard.addEventListener("pointerup", up);
    keyboard.addEventListener("pointercancel", up);
  }

  function showKey(pitch, down) {
    const key = document.querySelector(`.key[data-pitch="${pitch}"]`);
    if (key) key.classList.toggle("down", down);
  }

  function setUpComputerKeyboard() {
    const sounding = new Map();  // key code -> pitch, so an octave change mid-note releases the right one
    window.addEventListener("keydown", (event) => {
      if (event.repeat || event.ctrlKey || event.metaKey || event.altKey) return;
      if (event.target instanceof HTMLSelectElement || event.target instanceof HTMLInputElement) return;
      if (event.code === "KeyZ" || event.code === "KeyX") {
        state.octave = Math.min(8, Math.max(0, state.octave + (event.code === "KeyX" ? 1 : -1)));
        $("octave").textContent = String(state.octave);
        drawScreenKeys();
        return;
      }
      if (event.code === "Space") {
        event.preventDefault();
        setSustain(true);
        return;
      }
      const index = COMPUTER_KEYS.indexOf(event.code);
      if (index < 0) return;
      event.preventDefault();
      const pitch = basePitch() + index;
      sounding.set(event.code, pitch);
      noteOn(pitch, Number($("velocity").value), "computer");
    });
    window.addEventListener("keyup", (event) => {
      if (event.code === "Space") setSustain(false);
      if (!sounding.has(event.code)) return;
      noteOff(sounding.get(event.code));
      sounding.delete(event.code);
    });
  }

  function setUpMidi() {
    if (!navigator.requestMIDIAccess) {
      state.midi = "unavailable in this browser";
      $("midi").textContent = state.midi;
      return;
    }
    navigator.requestMIDIAccess().then((access) => {
      const connect = () => {
        const inputs = [...access.inputs.values()];
        for (const input of inputs) input.onmidimessage = onMidiMessage;
        state.midi = inputs.length ? inputs.map((input) => input.name).join(", ") : "no input connected";
        $("midi").textContent = state.midi;
      };
      access.onstatechange = connect;
      connect();
    }, (error) => {
      state.midi = `refused (${error.name || error})`;
      $("midi").textContent = state.midi;
    });
  }

  function onMidiMessage(message) {
    const [status, data1, data2] = message.data;
    const command = status & 0xf0;
    if (command === 0x90 && data2 > 0) noteOn(data1, data2, "midi");
    else if (command === 0x80 || (command === 0x90 && data2 === 0)) noteOff(data1);
    else if (command === 0xb0 && data1 === 64) setSustain(data2 >= 64);  // damper pedal
  }

  // ------------------------------------------------------------------ readouts

  function showLatency(latencyMs, serverMs, origin, ctx) {
    const where = origin === "client" ? "client cache"
      : `server ${Number.isFinite(serverMs) ? serverMs.toFixed(0) : "?"} ms, ${origin === "hit" ? "server cache" : "synthesized"}`;
    const output = (ctx.outputLatency || ctx.baseLatency || 0) * 1000;
    $("latency").textContent = `${latencyMs.toFixed(0)} ms key → sound (${where}) + ${output.toFixed(0)} ms output`;
  }

  function reportError(error) {
    state.errors.push(String(error.message || error));
    $("status").textContent = String(error.message || error);
    $("status").classList.add("error");
  }

  // Rainbowgram (Engel et al., 2017): brightness is the log magnitude of a short-time Fourier
  // transform, colour the instantaneous frequency (phase advance between frames, relative to the
  // bin's centre), drawn on a log-frequency axis.
  function drawRainbowgram(buffer) {
    const canvas = $("rainbowgram");
    const g = canvas.getContext("2d");
    const samples = buffer.getChannelData(0);
    const size = 1024;
    const hop = Math.max(64, Math.ceil(samples.length / canvas.width));
    const frames = Math.max(1, Math.floor((samples.length - size) / hop) + 1);
    const hann = Float32Array.from({ length: size }, (_, n) => 0.5 - 0.5 * Math.cos((2 * Math.PI * n) / size));
    const nyquist = buffer.sampleRate / 2;
    const low = 30;
    const rows = canvas.height;
    const binOfRow = Array.from({ length: rows }, (_, row) =>
      Math.min(size / 2 - 1, Math.round((low * (nyquist / low) ** (1 - row / (rows - 1))) / nyquist * (size / 2))));
    const levels = new Float32Array(frames * rows);  // dB, frame-major
    const hues = new Float32Array(frames * rows);
    let previousPhase = new Float32Array(size / 2);
    const re = new Float32Array(size);
    const im = new Float32Array(size);
    let loudest = -Infinity;
    for (let frame = 0; frame < frames; frame++) {
      for (let n = 0; n < size; n++) {
        re[n] = (samples[frame * hop + n] || 0) * hann[n];
        im[n] = 0;
      }
      fft(re, im);
      const phase = new Float32Array(size / 2);
      for (let bin = 0; bin < size / 2; bin++) phase[bin] = Math.atan2(im[bin], re[bin]);
      for (let row = 0; row < rows; row++) {
        const bin = binOfRow[row];
        const level = 20 * Math.log10(Math.hypot(re[bin], im[bin]) + 1e-9);
        // Phase advance beyond the bin centre's, as a frequency offset in bins (clamped to +-1/2).
        let advance = phase[bin] - previousPhase[bin] - (2 * Math.PI * bin * hop) / size;
        advance -= 2 * Math.PI * Math.round(advance / (2 * Math.PI));
        const offset = Math.min(0.5, Math.max(-0.5, (advance * size) / (2 * Math.PI * hop)));
        levels[frame * rows + row] = level;
        hues[frame * rows + row] = offset + 0.5;
        loudest = Math.max(loudest, level);
      }
      previousPhase = phase;
    }
    // Brightness over the note's own 70 dB below its loudest point: quiet notes stay visible.
    const image = g.createImageData(canvas.width, rows);
    for (let x = 0; x < canvas.width; x++) {
      const frame = Math.min(frames - 1, Math.floor((x * frames) / canvas.width));
      for (let row = 0; row < rows; row++) {
        const index = frame * rows + row;
        const brightness = Math.min(1, Math.max(0, (levels[index] - loudest + 70) / 70));
        const [r, gr, b] = hueToRgb(hues[index]);
        const offset = 4 * (row * canvas.width + x);
        image.data[offset] = r * brightness;
        image.data[offset + 1] = gr * brightness;
        image.data[offset + 2] = b * brightness;
        image.data[offset + 3] = 255;
      }
    }
    g.putImageData(image, 0, 0);
  }

  function hueToRgb(hue) {
    const channel = (shift) => 255 * (0.5 + 0.5 * Math.cos(2 * Math.PI * (hue + shift)));
    return [channel(0), channel(1 / 3), channel(2 / 3)];
  }

  // In-place radix-2 FFT of re + i·im (length a power of two).
  function fft(re, im) {
    const n = re.length;
    for (let i = 1, j = 0; i < n; i++) {
      let bit = n >> 1;
      for (; j & bit; bit >>= 1) j ^= bit;
      j ^= bit;
      if (i < j) {
        [re[i], re[j]] = [re[j], re[i]];
        [im[i], im[j]] = [im[j], im[i]];
      }
    }
    for (let length = 2; length <= n; length <<= 1) {
      const angle = (-2 * Math.PI) / length;
      const wr = Math.cos(angle);
      const wi = Math.sin(angle);
      for (let start = 0; start < n; start += length) {
        let cr = 1;
        let ci = 0;
        for (let k = 0; k < length / 2; k++) {
          const a = start + k;
          const b = a + length / 2;
          const tr = re[b] * cr - im[b] * ci;
          const ti = re[b] * ci + im[b] * cr;
          re[b] = re[a] - tr;
          im[b] = im[a] - ti;
          re[a] += tr;
          im[a] += ti;
          [cr, ci] = [cr * wr - ci * wi, cr * wi + ci * wr];
        }
      }
    }
  }

  // ------------------------------------------------------------------ start

  async function start() {
    try {
      const response = await fetch(`${API}/timbres`);
      if (!response.ok) throw new Error(`${API}/timbres: ${response.status}`);
      const info = await response.json();
      state.sampleRate = info.sample_rate;
      setUpCorners(info);
      $("weighting").addEventListener("change", (event) => { state.weighting = event.target.value; event.target.blur(); });
      $("seconds").addEventListener("change", (event) => { state.seconds = Number(event.target.value); event.target.blur(); });
      state.weighting = $("weighting").value;
      state.seconds = Number($("seconds").value);
      setUpPad();
      setPosition(0.5, 0.5);
      setUpScreenKeyboard();
      setUpComputerKeyboard();
      setUpMidi();
      $("status").textContent = `model ${info.model} · ${info.sample_rate} Hz · drag the puck, then play`;
      state.ready = true;
    } catch (error) {
      reportError(error);
    }
  }

  start();
})();
