// faceverify demo page: plain JavaScript, no framework, no build step.
// It is a client of the public JSON API (/api/v1/...) like any other; in
// demo mode it authenticates with the per-process token that the server
// put in the page's <meta name="fv-demo-token"> (see src/server/demo.c).
'use strict';
(() => {
  const $ = (sel, el = document) => el.querySelector(sel);
  const TOKEN = ($('meta[name="fv-demo-token"]') || {}).content || '';
  const MAX_BYTES = 12 * 1000 * 1000; // faceverifyd's default --max-body

  // ------------------------------------------------------------ API

  class ApiError extends Error {
    constructor(code, message, status) {
      super(message);
      this.code = code;
      this.status = status || 0;
    }
  }

  let busyCount = 0;
  function busy(delta, text) {
    busyCount = Math.max(0, busyCount + delta);
    $('#busy').hidden = busyCount === 0;
    if (text) $('#busy-text').textContent = text;
    document.body.dataset.busy = String(busyCount);
  }

  async function api(method, path, body, text) {
    busy(+1, text || 'Working…');
    const headers = {'X-Demo-Token': TOKEN};
    if (body && !(body instanceof FormData)) {
      body = JSON.stringify(body);
      headers['Content-Type'] = 'application/json';
    }
    try {
      let res;
      try {
        res = await fetch(path, {method, body, headers,
                                 credentials: 'same-origin', cache: 'no-store'});
      } catch (e) {
        throw new ApiError('network', 'Could not reach the server. Is faceverifyd still running?');
      }
      let data = null;
      try { data = await res.json(); } catch (e) { data = null; }
      if (!res.ok) {
        const err = (data && data.error) || {};
        throw new ApiError(err.code || 'http_' + res.status, err.message || res.statusText, res.status);
      }
      return data;
    } finally {
      busy(-1);
    }
  }

  // Plain words for the errors a person can act on.
  function plain(err) {
    switch (err.code) {
      case 'no_face': return 'No face found in this photo. Try a clearer, front-facing picture.';
      case 'multiple_faces': return 'Several faces in this photo. Use a photo of one person only.';
      case 'invalid_image': return 'This file could not be read as an image. Use a JPEG, PNG, HEIC, WebP, AVIF, TIFF, GIF or BMP photo.';
      case 'payload_too_large':
      case 'image_too_large': return 'This photo is too large. Use a smaller one (at most 12 MB and about 10 megapixels).';
      case 'conflict': return 'Someone with that name is already enrolled.';
      case 'no_templates': return 'This person has no photos yet. Add one first.';
      case 'model_unavailable': return 'The face models are not loaded on the server, so photos cannot be checked.';
      case 'unauthorized': return 'The demo session has expired (the server restarted?). Reload the page.';
      case 'forbidden': return 'The server refused this request. Open the demo at http://127.0.0.1 on the server\'s port.';
      case 'network': return err.message;
      default: return 'Something went wrong: ' + err.message;
    }
  }

  const fmt = (x, d = 3) => Number(x).toFixed(d);
  // A rate in words: "1 in 2,400" (at most the calibration's floor).
  const oneIn = (x) => x >= 1 ? 'all pairs of strangers'
    : `${x <= 1e-6 ? 'at most ' : ''}1 in ${Math.round(1 / x).toLocaleString('en')} pairs of strangers`;

  // A face's quality (the API's Quality object) in words: the score and
  // what made it poor.
  const quality = (f) => !f.quality ? 'unknown' :
    fmt(f.quality.score, 2) + (f.quality.reasons.length ? ` (${f.quality.reasons.join(', ').replace(/_/g, ' ')})` : '');
  const ms = (x) => (x < 10 ? x.toFixed(1) : Math.round(x)) + ' ms';

  // ------------------------------------------------------------ image slots

  // One image area: file input, drag-and-drop, camera; draws the photo
  // with face boxes, landmarks and labels on a canvas.
  class Slot {
    constructor(el, onPhoto) {
      this.el = el;
      this.name = el.dataset.slot;
      this.drop = $('.drop', el);
      this.canvas = $('.view', el);
      this.errorEl = $('.error', el);
      this.onPhoto = onPhoto;
      this.blob = null;
      this.bitmap = null;
      const input = $('.file', el);
      input.addEventListener('change', () => {
        if (input.files[0]) this.set(input.files[0]);
        input.value = '';
      });
      $('.cam', el).addEventListener('click', () => camera.open((blob) => this.set(blob)));
      this.drop.addEventListener('dragover', (e) => { e.preventDefault(); this.drop.classList.add('over'); });
      this.drop.addEventListener('dragleave', () => this.drop.classList.remove('over'));
      this.drop.addEventListener('drop', (e) => {
        e.preventDefault();
        this.drop.classList.remove('over');
        const f = e.dataTransfer.files[0];
        if (f) this.set(f);
      });
    }

    error(text) { this.errorEl.textContent = text || ''; }

    async set(blob) {
      this.error('');
      this.blob = null;
      if (blob.size > MAX_BYTES) {
        this.clear();
        this.error(plain({code: 'payload_too_large'}));
        return;
      }
      try {
        this.bitmap = await createImageBitmap(blob);
      } catch (e) {
        this.bitmap = null; // the browser cannot show it; the server decides
      }
      this.blob = blob;
      this.draw([]);
      this.onPhoto(this);
    }

    clear() {
      this.bitmap = null;
      this.drop.classList.remove('filled');
    }

    // faces: [{box, landmarks, label, good}] in image pixels.
    draw(faces) {
      if (!this.bitmap) { this.clear(); return; }
      const b = this.bitmap;
      const s = Math.min(1, 1200 / Math.max(b.width, b.height));
      const c = this.canvas;
      c.width = Math.round(b.width * s);
      c.height = Math.round(b.height * s);
      const g = c.getContext('2d');
      g.drawImage(b, 0, 0, c.width, c.height);
      const lw = Math.max(2, Math.round(Math.max(c.width, c.height) / 250));
      for (const f of faces) {
        const colour = f.good === false ? '#f97066' : (f.good ? '#32d583' : '#8b85ff');
        const x = f.box.left * s, y = f.box.top * s;
        const w = (f.box.right - f.box.left) * s, h = (f.box.bottom - f.box.top) * s;
        g.lineWidth = lw;
        g.strokeStyle = colour;
        g.strokeRect(x, y, w, h);
        g.fillStyle = '#fff';
        for (const [px, py] of f.landmarks || []) {
          g.beginPath();
          g.arc(px * s, py * s, lw * 1.2, 0, 2 * Math.PI);
          g.fill();
          g.lineWidth = 1;
          g.strokeStyle = colour;
          g.stroke();
        }
        if (f.label) {
          const fs = Math.max(13, Math.round(c.width / 40));
          g.font = `600 ${fs}px system-ui, sans-serif`;
          const tw = g.measureText(f.label).width + fs * 0.8;
          const ty = y - fs * 1.5 >= 0 ? y - fs * 1.5 : y + h;
          g.fillStyle = colour;
          g.fillRect(x - lw / 2, ty, tw, fs * 1.5);
          g.fillStyle = '#101828';
          g.fillText(f.label, x + fs * 0.4, ty + fs * 1.1);
        }
      }
      this.drop.classList.add('filled');
      this.canvas.setAttribute('aria-label', faces.length
        ? faces.map((f) => f.label || 'face').join(', ') : 'photo');
    }
  }

  // ------------------------------------------------------------ camera

  const camera = (() => {
    const dlg = $('#camera'), video = $('#camera-video'), err = $('#camera-error');
    let stream = null, done = null;
    function stop() {
      if (stream) stream.getTracks().forEach((t) => t.stop());
      stream = null;
      video.srcObject = null;
    }
    function close() { stop(); if (dlg.open) dlg.close(); }
    $('#camera-cancel').addEventListener('click', close);
    dlg.addEventListener('close', stop);
    $('#camera-shoot').addEventListener('click', () => {
      if (!stream || !video.videoWidth) return;
      const c = document.createElement('canvas');
      c.width = video.videoWidth;
      c.height = video.videoHeight;
      c.getContext('2d').drawImage(video, 0, 0);
      c.toBlob((blob) => { close(); if (blob && done) done(blob); }, 'image/jpeg', 0.92);
    });
    async function open(onShot) {
      done = onShot;
      err.textContent = '';
      $('#camera-shoot').disabled = true;
      dlg.showModal();
      if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
        err.textContent = 'This browser gives no camera access here. Open the demo at http://127.0.0.1 or over https, or choose a file instead.';
        return;
      }
      try {
        stream = await navigator.mediaDevices.getUserMedia({video: {facingMode: 'user'}, audio: false});
        video.srcObject = stream;
        $('#camera-shoot').disabled = false;
        $('#camera-shoot').focus();
      } catch (e) {
        if (e.name === 'NotAllowedError' || e.name === 'SecurityError')
          err.textContent = 'Camera permission was denied. Allow the camera for this page in the browser settings, or choose a file instead.';
        else if (e.name === 'NotFoundError' || e.name === 'OverconstrainedError' || e.name === 'DevicesNotFoundError')
          err.textContent = 'No camera was found on this device. Choose a file instead.';
        else if (e.name === 'NotReadableError')
          err.textContent = 'The camera is in use by another application.';
        else
          err.textContent = 'The camera could not be started (' + e.name + ').';
      }
    }
    return {open};
  })();

  // ------------------------------------------------------------ tabs

  const tabs = [...document.querySelectorAll('[role="tab"]')];
  function selectTab(tab) {
    for (const t of tabs) {
      const on = t === tab;
      t.setAttribute('aria-selected', String(on));
      t.tabIndex = on ? 0 : -1;
      document.getElementById(t.getAttribute('aria-controls')).hidden = !on;
    }
    if (tab.id === 'tab-identify') loadSubjects();
  }
  tabs.forEach((t, i) => {
    t.addEventListener('click', () => selectTab(t));
    t.addEventListener('keydown', (e) => {
      const d = e.key === 'ArrowRight' ? 1 : e.key === 'ArrowLeft' ? -1 : 0;
      if (!d) return;
      const next = tabs[(i + d + tabs.length) % tabs.length];
      next.focus();
      selectTab(next);
    });
  });

  // ------------------------------------------------------------ verify

  const slotA = new Slot($('[data-slot="a"]'), () => verify());
  const slotB = new Slot($('[data-slot="b"]'), () => verify());
  let verifySeq = 0;

  function chipSrc(face) { return face && face.chip ? face.chip : ''; }

  async function verify() {
    $('#verify-result').hidden = true;
    if (!slotA.blob || !slotB.blob) return;
    const seq = ++verifySeq;
    slotA.error('');
    slotB.error('');
    const form = new FormData();
    form.append('image_a', slotA.blob, 'a.jpg');
    form.append('image_b', slotB.blob, 'b.jpg');
    form.append('return_chips', '1');
    const t0 = performance.now();
    let r;
    try {
      r = await api('POST', '/api/v1/verify', form, 'Comparing faces…');
    } catch (e) {
      if (seq !== verifySeq) return;
      // The server names the image it could not use: "image a: ..." / "image_b: ...".
      const m = /image[ _]([ab])\b/.exec(e.message || '');
      (m && m[1] === 'b' ? slotB : slotA).error(plain(e));
      return;
    }
    if (seq !== verifySeq) return;
    const rtt = performance.now() - t0;
    const good = r.verified;
    slotA.draw([{...r.faces.a, good}]);
    slotB.draw([{...r.faces.b, good}]);
    const v = $('#verdict');
    v.textContent = good ? 'Same person' : 'Different people';
    v.className = 'verdict ' + (good ? 'same' : 'different');
    $('#chip-a').src = chipSrc(r.faces.a);
    $('#chip-b').src = chipSrc(r.faces.b);
    $('#distance').textContent = fmt(r.distance);
    $('#threshold').textContent = fmt(r.threshold);
    $('#similarity').textContent = Math.round(r.similarity * 100) + '%';
    // the decision as a rate: the false-match rate it was made at, and how
    // often two different people are at least this close (estimated FMR)
    const op = r.operating_point;
    $('#operating-point').textContent = op && op.fmr !== null
      ? `FMR ${op.fmr.toExponential(0)} (threshold ${fmt(op.threshold)})`
      : `fixed threshold ${fmt(r.threshold)}`;
    $('#estimated-fmr').textContent = r.estimated_fmr === null || r.estimated_fmr === undefined
      ? 'not calibrated for this model' : oneIn(r.estimated_fmr);
    const scale = 1.2, pct = (x) => Math.max(0, Math.min(100, (x / scale) * 100)) + '%';
    $('.gauge-same').style.width = pct(r.threshold);
    $('#gauge-threshold').style.left = pct(r.threshold);
    $('#gauge-marker').style.left = pct(r.distance);
    const t = r.timings_ms;
    $('#timings').textContent = `Server ${ms(t.total)}: decode ${ms(t.decode)}, detect ${ms(t.detect)}, ` +
      `landmarks ${ms(t.landmarks)}, chip ${ms(t.chip)}, embed ${ms(t.embed)}; round trip ${ms(rtt)}. ` +
      `Faces found: ${r.faces.a.faces_detected} and ${r.faces.b.faces_detected} (the largest is used). ` +
      `Face quality: ${quality(r.faces.a)} and ${quality(r.faces.b)}.`;
    $('#verify-result').hidden = false;
  }

  // ------------------------------------------------------------ subjects

  const subjectList = $('#subjects');

  async function loadSubjects() {
    let r;
    try {
      r = await api('GET', '/api/v1/subjects?limit=1000', undefined, 'Loading people…');
    } catch (e) {
      $('#subject-error').textContent = plain(e);
      return;
    }
    subjectList.replaceChildren(...r.results.map(subjectItem));
    $('#subjects-empty').hidden = r.results.length > 0;
  }

  function button(text, cls, onClick) {
    const b = document.createElement('button');
    b.type = 'button';
    b.className = 'btn small ' + cls;
    b.textContent = text;
    b.addEventListener('click', onClick);
    return b;
  }

  function subjectItem(s) {
    const li = document.createElement('li');
    li.dataset.name = s.name;
    li.dataset.id = s.id;
    const who = document.createElement('div');
    who.className = 'who';
    const strong = document.createElement('strong');
    strong.textContent = s.name;
    const count = document.createElement('span');
    count.className = 'count';
    count.textContent = s.faces === 1 ? '1 photo' : `${s.faces} photos`;
    who.append(strong, count);
    const err = document.createElement('p');
    err.className = 'error';
    err.setAttribute('role', 'alert');
    const add = document.createElement('label');
    add.className = 'btn small';
    const input = document.createElement('input');
    input.type = 'file';
    input.accept = 'image/*';
    input.className = 'enroll';
    input.setAttribute('aria-label', `Add a photo of ${s.name}`);
    add.append(input, 'Add photo');
    const enroll = async (blob) => {
      err.textContent = '';
      const form = new FormData();
      form.append('image', blob, 'face.jpg');
      try {
        await api('POST', `/api/v1/subjects/${s.id}/faces`, form, `Enrolling ${s.name}…`);
      } catch (e) {
        err.textContent = plain(e);
        return;
      }
      await loadSubjects();
    };
    input.addEventListener('change', () => { if (input.files[0]) enroll(input.files[0]); });
    const cam = button('Camera', 'ghost', () => camera.open(enroll));
    cam.setAttribute('aria-label', `Take a photo of ${s.name}`);
    const del = button('Delete', 'danger', async () => {
      if (!window.confirm(`Delete ${s.name} and all their photos?`)) return;
      try {
        await api('DELETE', `/api/v1/subjects/${s.id}`, undefined, 'Deleting…');
      } catch (e) {
        err.textContent = plain(e);
        return;
      }
      await loadSubjects();
    });
    del.setAttribute('aria-label', `Delete ${s.name}`);
    li.append(who, add, cam, del, err);
    return li;
  }

  $('#subject-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const input = $('#subject-name');
    const name = input.value.trim();
    $('#subject-error').textContent = '';
    if (!name) return;
    try {
      await api('POST', '/api/v1/subjects', {name}, 'Adding…');
    } catch (err) {
      $('#subject-error').textContent = plain(err);
      return;
    }
    input.value = '';
    await loadSubjects();
    const added = [...subjectList.children].find((li) => li.dataset.name === name);
    if (added) $('input.enroll', added).focus();
  });

  // ------------------------------------------------------------ identify

  let identifySeq = 0;
  const probe = new Slot($('[data-slot="probe"]'), () => identify());

  async function identify() {
    const seq = ++identifySeq;
    $('#faces').replaceChildren();
    $('#identify-timings').textContent = '';
    const form = new FormData();
    form.append('image', probe.blob, 'probe.jpg');
    form.append('return_chips', '1');
    let r;
    try {
      r = await api('POST', '/api/v1/identify', form, 'Looking for known faces…');
    } catch (e) {
      if (seq === identifySeq) probe.error(plain(e));
      return;
    }
    if (seq !== identifySeq) return;
    const faces = r.faces.map((f) => ({...f, label: f.match ? f.match.name : 'Unknown', good: !!f.match}));
    probe.draw(faces);
    $('#faces').replaceChildren(...faces.map((f, i) => {
      const li = document.createElement('li');
      li.dataset.label = f.label;
      const img = document.createElement('img');
      img.alt = `Face ${i + 1}`;
      if (f.chip) img.src = f.chip;
      const body = document.createElement('div');
      const name = document.createElement('div');
      name.className = f.match ? 'name' : 'name unknown';
      name.textContent = f.label;
      const cands = document.createElement('ul');
      cands.className = 'cands';
      for (const c of f.candidates) {
        const item = document.createElement('li');
        // open set ranks by score; the k-NN vote (trained models) by similarity
        item.textContent = c.score !== undefined
          ? `${c.name}: score ${fmt(c.score)} (distance ${fmt(c.distance)})`
          : `${c.name}: similarity ${Math.round(c.similarity * 100)}% (distance ${fmt(c.distance)})`;
        cands.append(item);
      }
      if (!f.candidates.length) {
        const item = document.createElement('li');
        item.textContent = 'No one enrolled to compare with.';
        cands.append(item);
      }
      const q = document.createElement('div');
      q.className = 'quality';
      q.textContent = `Face quality ${quality(f)}`;
      // the open-set decision: the rate it was made at, for this gallery
      const op = document.createElement('div');
      op.className = 'quality';
      const o = f.operating_point;
      op.textContent = o && o.fpir !== undefined
        ? `Decided at FPIR ${o.fpir.toExponential(0)} among ${o.gallery_size} enrolled` +
          (f.match && f.match.estimated_fpir !== undefined
            ? `; strangers score this high ${Math.round(f.match.estimated_fpir * 1000) / 10}% of the time` : '')
        : 'Decided by the k-nearest-neighbour vote';
      body.append(name, q, op, cands);
      li.append(img, body);
      return li;
    }));
    const t = r.timings_ms;
    $('#identify-timings').textContent = `${r.count} face${r.count === 1 ? '' : 's'}; server ${ms(t.total)} ` +
      `(detect ${ms(t.detect)}, embed ${ms(t.embed)}, search ${ms(t.search)}).`;
  }

  document.body.dataset.ready = '1';
})();
