// The test player page: the catalog from /api/assets, and Shaka Player playing the
// chosen format × scheme with keys from this origin's licence routes.
'use strict';

const HLS_SCHEMES = ['clear', 'aes128', 'sample-aes', 'cbcs', 'cenc'];
const DASH_SCHEMES = ['clear', 'cenc', 'cbcs'];
const CLEARKEY_URL = `${location.origin}/license/clearkey`;

const state = { player: null, licenceRequests: [], errors: [], playing: null, startedAt: null };
window.__originPage = state;

// What automated checks read (tests/test_browser_page.py): a snapshot of playback, and
// whether the run is decided — playing past minTime for minWall seconds, or failed.
window.__state = {
  snapshot() {
    const video = document.getElementById('video');
    const quality = video.getVideoPlaybackQuality ? video.getVideoPlaybackQuality() : null;
    return {
      playing: state.playing,
      currentTime: video.currentTime,
      frames: quality ? quality.totalVideoFrames : 0,
      audioDecodedBytes: video.webkitAudioDecodedByteCount || 0,
      errors: state.errors.slice(),
      licenceRequests: state.licenceRequests.slice(),
      catalogRows: document.querySelectorAll('#catalog tr').length,
      licenceLogLines: document.querySelectorAll('#licence-log li').length,
      drmConfig: document.getElementById('drm-config').textContent,
    };
  },
  decided(minTime, minWall) {
    if (state.errors.length) return true;
    const video = document.getElementById('video');
    if (state.startedAt === null && video.currentTime > 0) state.startedAt = Date.now();
    return video.currentTime > minTime && state.startedAt !== null
      && (Date.now() - state.startedAt) / 1000 >= minWall;
  },
};

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  Object.entries(attrs).forEach(([k, v]) => node.setAttribute(k, v));
  children.forEach((c) => node.append(c));
  return node;
}

function log(list, text, cls) {
  const item = el('li', cls ? { class: cls } : {}, `${new Date().toISOString().slice(11, 23)} ${text}`);
  document.getElementById(list).append(item);
}

function drmConfig(format, scheme) {
  if (scheme === 'cenc' || scheme === 'cbcs') {
    return { drm: { servers: { 'org.w3.clearkey': CLEARKEY_URL } } };
  }
  return { drm: { servers: {} } };  // clear, or AES-128: Shaka fetches the key URI itself
}

// Shaka Player reaches Clear Key in HLS only through an identity key (the key route);
// origin writes one under cbcs when asked with key_systems (under cenc it always does).
function playerUrl(url, format, scheme) {
  if (format !== 'hls' || scheme !== 'cbcs') return url;
  const u = new URL(url, location.href);
  u.searchParams.set('key_systems', 'identity');
  return u.toString();
}

async function play(pageUrl, format, scheme, link) {
  const url = playerUrl(pageUrl, format, scheme);
  document.querySelectorAll('a.playing').forEach((a) => a.classList.remove('playing'));
  if (link) link.classList.add('playing');
  const config = drmConfig(format, scheme);
  document.getElementById('drm-config').textContent = JSON.stringify(config, null, 2);
  document.getElementById('now-playing').textContent = `${format.toUpperCase()} ${scheme}: ${url}`;
  state.playing = { url, format, scheme };
  const player = state.player;
  player.resetConfiguration();
  player.configure(config);
  try {
    await player.load(url);
    await document.getElementById('video').play().catch(() => {});
    log('event-log', `loaded ${url}`);
  } catch (error) {
    state.errors.push(String(error.code || error));
    log('event-log', `load failed: shaka error ${error.code} ${error.message || ''}`, 'error');
  }
}

function renderCatalog(assets) {
  const section = document.getElementById('catalog');
  section.replaceChildren();
  if (!assets.length) {
    section.append(el('p', {}, 'No assets under the media root yet — see README "Adding your own content".'));
    return;
  }
  for (const asset of assets) {
    const table = el('table', {}, el('caption', {}, asset.name));
    table.append(el('tr', {}, el('th', {}, 'manifest'), el('th', {}, 'schemes')));
    for (const [playlist, urls] of Object.entries(asset.hls)) {
      const cell = el('td');
      for (const scheme of HLS_SCHEMES) {
        if (!urls[scheme]) continue;
        const a = el('a', { href: urls[scheme], 'data-format': 'hls', 'data-scheme': scheme }, scheme);
        a.addEventListener('click', (e) => { e.preventDefault(); play(urls[scheme], 'hls', scheme, a); });
        cell.append(a);
      }
      table.append(el('tr', {}, el('td', {}, `HLS ${playlist}`), cell));
    }
    const dash = el('td');
    for (const scheme of DASH_SCHEMES) {
      const url = (asset.dash || {})[scheme];
      if (!url) continue;
      const a = el('a', { href: url, 'data-format': 'dash', 'data-scheme': scheme }, scheme);
      a.addEventListener('click', (e) => { e.preventDefault(); play(url, 'dash', scheme, a); });
      dash.append(a);
    }
    table.append(el('tr', {}, el('td', {}, 'DASH manifest.mpd'), dash));
    section.append(table);
  }
}

async function main() {
  const response = await fetch('/api/assets');
  const { assets } = await response.json();
  renderCatalog(assets);
  if (typeof shaka === 'undefined') {
    log('event-log', 'Shaka Player is not installed: run "make web" (npm ci --prefix web).', 'error');
    return;
  }
  shaka.polyfill.installAll();
  const player = new shaka.Player();
  await player.attach(document.getElementById('video'));
  state.player = player;
  const types = shaka.net.NetworkingEngine.RequestType;
  player.getNetworkingEngine().registerRequestFilter((type, request) => {
    if (type === types.LICENSE || type === types.KEY) {
      const kind = type === types.LICENSE ? 'licence' : 'key';
      state.licenceRequests.push({ kind, uri: request.uris[0] });
      log('licence-log', `${kind} ${request.method || 'GET'} ${request.uris[0]}`);
    }
  });
  player.addEventListener('error', (event) => {
    state.errors.push(String(event.detail.code));
    log('event-log', `shaka error ${event.detail.code}`, 'error');
  });
  const wanted = new URLSearchParams(location.search);
  if (wanted.get('play')) {
    play(wanted.get('play'), wanted.get('format') || 'hls', wanted.get('scheme') || 'clear');
  }
}

main().catch((error) => log('event-log', `page failed: ${error}`, 'error'));
