// The browser harness: one player plays one URL with its DRM configured the way that player
// wants it, muted, and everything the test checks is readable through window.__state.snapshot().
//
// Query parameters:
//   player   shaka | hlsjs | dashjs
//   url      the manifest (absolute, on origin: a different origin from this page)
//   drm      none | aes128 | clearkey       (aes128: the player fetches the HLS key URI itself)
//   license  the ClearKey licence URL (drm=clearkey); Shaka without it uses the MPD's Laurl
'use strict';

const LIBS = {
  shaka: '/lib/shaka-player.compiled.js',
  hlsjs: '/lib/hls.min.js',
  dashjs: '/lib/dash.all.min.js',
};

const params = new URLSearchParams(location.search);
const video = document.getElementById('video');
const t0 = performance.now();

const state = {
  player: params.get('player'),
  url: params.get('url'),
  drm: params.get('drm') || 'none',
  license: params.get('license') || '',
  library: null,        // the player's own version string
  loaded: false,        // the player accepted the manifest
  errors: [],           // player errors that stop playback (fatal / critical)
  warnings: [],         // recoverable player errors, kept for the report
  events: [],           // a short timeline of what happened
  licenceRequests: [],  // licence / key requests as the player's own hooks saw them
  mediaError: null,     // HTMLMediaElement.error, if any
  playingAt: null,      // wall seconds when 'playing' first fired
};
window.__state = state;

function wall() { return (performance.now() - t0) / 1000; }

function note(text) {
  state.events.push(`${wall().toFixed(2)} ${text}`);
  if (state.events.length > 200) state.events.splice(0, state.events.length - 200);
}

// Licence and key requests as the player's own hooks saw them, counted per (kind, method, url).
function sawLicenceRequest(kind, method, url) {
  const seen = state.licenceRequests.find((r) => r.kind === kind && r.method === method && r.url === url);
  if (seen) seen.count += 1;
  else state.licenceRequests.push({ kind, method, url, count: 1 });
}

function fail(source, detail) {
  state.errors.push({ source, at: Number(wall().toFixed(2)), ...detail });
  note(`error ${source} ${JSON.stringify(detail)}`);
}

performance.setResourceTimingBufferSize(100000);

// Every network request the page made that went to a licence/key route, with its HTTP status
// (Resource Timing's responseStatus; cross-origin responses report it too).
function isLicenceUrl(url) {
  try { return new URL(url).pathname.startsWith('/license/'); } catch (e) { return false; }
}

function licenceResources() {
  return performance.getEntriesByType('resource')
    .filter((e) => isLicenceUrl(e.name))
    .map((e) => ({ url: e.name, status: e.responseStatus ?? null, initiator: e.initiatorType }));
}

state.snapshot = () => {
  const quality = video.getVideoPlaybackQuality();
  return {
    player: state.player,
    library: state.library,
    url: state.url,
    drm: state.drm,
    license: state.license,
    loaded: state.loaded,
    wall: Number(wall().toFixed(3)),
    playingAt: state.playingAt,
    currentTime: video.currentTime,
    duration: Number.isFinite(video.duration) ? video.duration : null,
    readyState: video.readyState,
    paused: video.paused,
    ended: video.ended,
    videoWidth: video.videoWidth,
    videoHeight: video.videoHeight,
    totalVideoFrames: quality.totalVideoFrames,
    droppedVideoFrames: quality.droppedVideoFrames,
    // Bytes the media pipeline's audio and video decoders consumed (Chromium's counters).
    audioDecodedBytes: video.webkitAudioDecodedByteCount ?? null,
    videoDecodedBytes: video.webkitVideoDecodedByteCount ?? null,
    mediaKeys: Boolean(video.mediaKeys),
    mediaError: state.mediaError,
    errors: state.errors,
    warnings: state.warnings.slice(-20),
    licenceRequests: state.licenceRequests,
    eme: state.eme.slice(-20),
    licenceResources: licenceResources(),
    events: state.events.slice(-60),
  };
};

// True once the run is decided: playback passed every check, minWall seconds after it started,
// or something fatal happened.  The driver polls this inside the page (waitForFunction).
state.decided = (minTime, minWall) => {
  if (state.errors.length || state.mediaError) return true;
  const s = state.snapshot();
  return s.playingAt !== null && s.wall - s.playingAt >= minWall && s.currentTime > minTime
    && s.totalVideoFrames > 0 && s.audioDecodedBytes > 0;
};

for (const type of ['loadedmetadata', 'canplay', 'playing', 'waiting', 'stalled', 'ended',
  'encrypted', 'waitingforkey']) {
  video.addEventListener(type, () => {
    if (type === 'playing' && state.playingAt === null) state.playingAt = Number(wall().toFixed(3));
    note(`video ${type} t=${video.currentTime.toFixed(2)}`);
  });
}
video.addEventListener('error', () => {
  const e = video.error;
  state.mediaError = e ? { code: e.code, message: e.message } : { code: -1, message: 'unknown' };
  note(`video error ${JSON.stringify(state.mediaError)}`);
});

// EME calls as the CDM saw them (instrumentation only: arguments and results pass through).
state.eme = [];
if (window.MediaKeySession) {
  const generateRequest = MediaKeySession.prototype.generateRequest;
  MediaKeySession.prototype.generateRequest = function (initDataType, initData) {
    const entry = { call: 'generateRequest', initDataType, bytes: initData ? initData.byteLength : null };
    state.eme.push(entry);
    return generateRequest.call(this, initDataType, initData).then(
      (v) => { entry.ok = true; return v; },
      (e) => { entry.error = `${e.name}: ${e.message}`; note(`EME generateRequest(${initDataType}) failed: ${e.message}`); throw e; });
  };
  const update = MediaKeySession.prototype.update;
  MediaKeySession.prototype.update = function (response) {
    const entry = { call: 'update', bytes: response ? response.byteLength : null };
    state.eme.push(entry);
    return update.call(this, response).then(
      (v) => { entry.ok = true; return v; },
      (e) => { entry.error = `${e.name}: ${e.message}`; note(`EME update failed: ${e.message}`); throw e; });
  };
}

function loadScript(src) {
  return new Promise((resolve, reject) => {
    const s = document.createElement('script');
    s.src = src;
    s.onload = resolve;
    s.onerror = () => reject(new Error(`cannot load ${src}`));
    document.head.append(s);
  });
}

function startVideo() {
  video.muted = true;
  video.play().catch((e) => note(`play() rejected: ${e}`));
}

async function playShaka() {
  shaka.polyfill.installAll();
  state.library = `shaka-player ${shaka.Player.version}`;
  const player = new shaka.Player();
  await player.attach(video);
  const config = { drm: { servers: {} } };
  // Without a licence URL Shaka takes the MPD's dashif:Laurl (origin writes the token in it).
  if (state.drm === 'clearkey' && state.license) {
    config.drm.servers['org.w3.clearkey'] = state.license;
  }
  player.configure(config);
  const types = shaka.net.NetworkingEngine.RequestType;
  player.getNetworkingEngine().registerRequestFilter((type, request) => {
    if (type === types.LICENSE || type === types.KEY) {
      sawLicenceRequest(type === types.LICENSE ? 'licence' : 'key', request.method || 'GET',
        request.uris[0]);
    }
  });
  player.addEventListener('error', (event) => {
    const e = event.detail;
    const detail = { code: e.code, category: e.category, severity: e.severity,
      data: JSON.stringify(e.data || []).slice(0, 400) };
    if (e.severity === shaka.util.Error.Severity.CRITICAL) fail('shaka', detail);
    else state.warnings.push(detail);
  });
  try {
    await player.load(state.url);
    state.loaded = true;
    note('shaka loaded');
  } catch (e) {
    fail('shaka.load', { code: e.code, category: e.category, severity: e.severity,
      name: e.name, message: String(e.message || e).slice(0, 300),
      data: JSON.stringify(e.data || []).slice(0, 400) });
    return;
  }
  startVideo();
}

async function playHlsJs() {
  state.library = `hls.js ${Hls.version}`;
  if (!Hls.isSupported()) { fail('hlsjs', { details: 'Hls.isSupported() is false' }); return; }
  const config = { debug: false, enableWorker: true };
  if (state.drm === 'clearkey') {
    config.emeEnabled = true;
    config.drmSystems = { 'org.w3.clearkey': { licenseUrl: state.license } };
    config.licenseXhrSetup = (xhr, url) => {
      sawLicenceRequest('licence', 'POST', url);
    };
  }
  const hls = new Hls(config);
  hls.on(Hls.Events.ERROR, (_, data) => {
    const detail = { type: data.type, details: data.details, fatal: data.fatal,
      reason: String(data.reason || data.error || '').slice(0, 300),
      url: (data.frag && data.frag.url) || (data.context && data.context.url) || undefined };
    if (data.fatal) fail('hlsjs', detail);
    else { state.warnings.push(detail); note(`hls.js non-fatal ${data.details}`); }
  });
  hls.on(Hls.Events.KEY_LOADED, (_, data) => {
    const key = data.keyInfo && data.keyInfo.decryptdata;
    sawLicenceRequest('key', 'GET', key ? key.uri : '?');
  });
  hls.on(Hls.Events.MANIFEST_PARSED, () => {
    state.loaded = true;
    note('hls.js manifest parsed');
    startVideo();
  });
  hls.attachMedia(video);
  hls.loadSource(state.url);
  window.__hls = hls;
}

async function playDashJs() {
  const player = dashjs.MediaPlayer().create();
  state.library = `dash.js ${player.getVersion()}`;
  const events = dashjs.MediaPlayer.events;
  // The EME events live on the protection module's own list.
  const drmEvents = (dashjs.Protection && dashjs.Protection.events) || {};
  player.updateSettings({ debug: { logLevel: dashjs.Debug.LOG_LEVEL_WARNING } });
  player.on(events.ERROR, (e) => {
    const err = e.error || {};
    fail('dashjs', { code: err.code, message: String(err.message || e.event || '').slice(0, 300) });
  });
  player.on(events.PLAYBACK_ERROR, (e) => fail('dashjs.playback', { message: String(e.error && e.error.message || e.error) }));
  player.on(drmEvents.KEY_SESSION_UPDATED || 'public_keySessionUpdated', () => note('dash.js key session updated'));
  player.on(drmEvents.LICENSE_REQUEST_COMPLETE || 'public_licenseRequestComplete', (e) => {
    const d = e.data || {};
    sawLicenceRequest('licence', 'POST', d.url || state.license);
    if (e.error) note(`dash.js licence request error ${String(e.error.message || e.error)}`);
  });
  player.on(events.STREAM_INITIALIZED, () => { state.loaded = true; note('dash.js stream initialized'); });
  video.muted = true;
  player.initialize(video, null, true);  // autoplay (muted)
  if (state.drm === 'clearkey') {
    player.setProtectionData({ 'org.w3.clearkey': { serverURL: state.license } });
  }
  player.attachSource(state.url);
  window.__dash = player;
}

async function main() {
  const lib = LIBS[state.player];
  if (!lib) { fail('harness', { message: `unknown player ${state.player}` }); return; }
  await loadScript(lib);
  note(`library loaded ${lib}`);
  if (state.player === 'shaka') await playShaka();
  else if (state.player === 'hlsjs') await playHlsJs();
  else await playDashJs();
}

main().catch((e) => fail('harness', { message: String(e && e.stack || e).slice(0, 500) }));
