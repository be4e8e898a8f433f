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
    if (tab.id === 'tab-people') refreshPeople();
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

  // The face of an identify answer as a photo of its own: the whole photo
  // when it has one face, else a cut around the face (the server takes the
  // largest face of a photo), or the whole photo if this browser cannot
  // draw it.
  function faceBlob(f, count) {
    const b = probe.bitmap;
    if (count === 1 || !b) return Promise.resolve(probe.blob);
    const w = f.box.right - f.box.left, h = f.box.bottom - f.box.top;
    const x0 = Math.max(0, Math.floor(f.box.left - w)), y0 = Math.max(0, Math.floor(f.box.top - h));
    const x1 = Math.min(b.width, Math.ceil(f.box.right + w)), y1 = Math.min(b.height, Math.ceil(f.box.bottom + h));
    const c = document.createElement('canvas');
    c.width = x1 - x0;
    c.height = y1 - y0;
    c.getContext('2d').drawImage(b, x0, y0, c.width, c.height, 0, 0, c.width, c.height);
    return new Promise((done) => c.toBlob((blob) => done(blob || probe.blob), 'image/png'));
  }

  // "Not this person": a correction on the matched subject with this face
  // (POST /api/v1/subjects/{id}/not), then the photo is identified again.
  function notThis(f, count) {
    const name = f.match.name;
    const b = button(`Not ${name}`, 'ghost', async () => {
      probe.error('');
      const form = new FormData();
      form.append('image', await faceBlob(f, count), 'face.png');
      try {
        await api('POST', `/api/v1/subjects/${f.match.id}/not`, form, `Marking not ${name}…`);
      } catch (e) {
        probe.error(plain(e));
        return;
      }
      await identify();
    });
    b.classList.add('not-this');
    b.setAttribute('aria-label', `This face is not ${name}`);
    return b;
  }

  // Undoes the correction that excluded candidate c (DELETE
  // /api/v1/subjects/{id}/not/{correction_id}), then identifies again.
  function undoNot(c) {
    const b = button('Undo', 'ghost', async () => {
      probe.error('');
      try {
        await api('DELETE', `/api/v1/subjects/${c.id}/not/${c.correction_id}`, undefined, 'Undoing…');
      } catch (e) {
        probe.error(plain(e));
        return;
      }
      await identify();
    });
    b.setAttribute('aria-label', `Undo "not ${c.name}"`);
    return b;
  }

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
        // open set ranks by score; the k-NN vote (trained models) by
        // similarity; a subject a correction excludes has neither
        item.textContent = c.excluded
          ? `${c.name}: distance ${fmt(c.distance)}, excluded (` +
            (c.excluded === 'correction' ? 'marked not this person' : c.excluded) + ')'
          : c.score !== undefined
          ? `${c.name}: score ${fmt(c.score)} (distance ${fmt(c.distance)})`
          : `${c.name}: similarity ${Math.round(c.similarity * 100)}% (distance ${fmt(c.distance)})`;
        if (c.excluded) item.className = 'excluded';
        if (c.excluded === 'correction' && c.correction_id !== undefined) item.append(' ', undoNot(c));
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
      if (f.match) body.append(notThis(f, r.faces.length));
      li.append(img, body);
      return li;
    }));
    $('#faces').dataset.seq = String(seq); // tests wait on this
    const t = r.timings_ms;
    $('#identify-timings').textContent = `${r.count} face${r.count === 1 ? '' : 's'}; server ${ms(t.total)} ` +
      `(detect ${ms(t.detect)}, embed ${ms(t.embed)}, search ${ms(t.search)}).`;
  }

  // ------------------------------------------------------------ people

  // The People view: a batch of photos -> unassigned faces on the server
  // (POST /api/v1/faces) -> groups (POST /api/v1/faces/cluster over the
  // unassigned faces) -> names, merges and moves.  The server keeps no
  // photos, so the face pictures are cut here from each photo of this
  // page's batches with the face's box: facePics maps a face id to
  // {photo: {name, bitmap}, box}.  A face whose photo this page never saw
  // (an earlier visit, or enrolled elsewhere) is shown as a blank tile.
  const facePics = new Map();
  const TILE = 88;
  let people = [];           // the collection's subjects, with their faces

  const peopleStatus = (text) => { $('#people-status').textContent = text || ''; };

  // Shows [what, text] problems under the photos (appends with more).
  function peopleProblems(list, more) {
    const items = list.map(([what, text]) => {
      const li = document.createElement('li');
      li.textContent = what ? `${what}: ${text}` : text;
      return li;
    });
    if (more) $('#people-error').append(...items);
    else $('#people-error').replaceChildren(...items);
  }

  // A square around the face's box with a margin, drawn into canvas c.
  function drawFace(c, pic) {
    const g = c.getContext('2d');
    g.fillStyle = '#d0d5dd';
    g.fillRect(0, 0, c.width, c.height);
    if (!pic || !pic.photo.bitmap) {
      g.fillStyle = '#667085';
      g.font = `600 ${Math.round(c.width / 2)}px system-ui, sans-serif`;
      g.textAlign = 'center';
      g.textBaseline = 'middle';
      g.fillText('?', c.width / 2, c.height / 2);
      return;
    }
    const b = pic.box, side = Math.max(b.right - b.left, b.bottom - b.top) * 1.5;
    const cx = (b.left + b.right) / 2, cy = (b.top + b.bottom) / 2;
    g.drawImage(pic.photo.bitmap, cx - side / 2, cy - side / 2, side, side, 0, 0, c.width, c.height);
  }

  // One face of a group: its picture and a checkbox that selects it.
  function faceTile(id, pic, checked) {
    const li = document.createElement('li');
    li.className = 'face';
    const c = document.createElement('canvas');
    c.width = c.height = TILE;
    drawFace(c, pic);
    const what = pic ? `Face from ${pic.photo.name}` : `Face ${id} (its photo is not in this page)`;
    if (pic) li.dataset.photo = pic.photo.name;
    li.dataset.faceId = id;
    li.draggable = true;
    li.addEventListener('dragstart', (e) => e.dataTransfer.setData('text/x-fv-face', String(id)));
    const box = document.createElement('input');
    box.type = 'checkbox';
    box.checked = checked;
    box.value = id;
    box.setAttribute('aria-label', what);
    const label = document.createElement('label');
    c.setAttribute('aria-hidden', 'true');
    label.append(box, c);
    li.append(label);
    return li;
  }

  // A name field, its submit button and what happens on submit.
  function nameForm(id, labelText, buttonText, onName) {
    const form = document.createElement('form');
    form.className = 'row';
    const label = document.createElement('label');
    label.htmlFor = id;
    label.className = 'sr-only';
    label.textContent = labelText;
    const input = document.createElement('input');
    input.id = id;
    input.placeholder = 'Name, e.g. Ada';
    input.maxLength = 200;
    input.autocomplete = 'off';
    input.required = true;
    input.setAttribute('list', 'people-names');
    const go = document.createElement('button');
    go.type = 'submit';
    go.className = 'btn small';
    go.textContent = buttonText;
    form.append(label, input, go);
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      const name = input.value.trim();
      if (name) onName(name);
    });
    return form;
  }

  // A card of faces: a cluster, the faces in no cluster, or a person.
  function groupCard(kind, title, faces, checked) {
    const card = document.createElement('section');
    card.className = 'group';
    card.dataset.kind = kind;
    const h = document.createElement('h3');
    h.textContent = title;
    const grid = document.createElement('ul');
    grid.className = 'face-grid';
    grid.append(...faces.map((f) => faceTile(f.id, f.pic, checked)));
    const err = document.createElement('p');
    err.className = 'error';
    err.setAttribute('role', 'alert');
    card.append(h, grid, err);
    card.selected = () => [...card.querySelectorAll('input[type=checkbox]:checked')].map((b) => Number(b.value));
    card.error = (text) => { err.textContent = text || ''; };
    return card;
  }

  // The API's target for a name: an existing subject's id, else a new name.
  function target(name) {
    const s = people.find((p) => p.name === name);
    return s ? {subject_id: s.id} : {subject_name: name};
  }

  // Moves faces (unassigned or another person's) to the person called
  // name, then shows the new state.  Errors go to the card.
  async function assignFaces(card, ids, name) {
    card.error('');
    if (!ids.length) {
      card.error('Select at least one face first.');
      return;
    }
    let r;
    try {
      r = await api('POST', '/api/v1/faces/assign', {face_ids: ids, ...target(name)}, `Naming ${name}…`);
    } catch (e) {
      card.error(plain(e));
      return;
    }
    peopleStatus(`${r.moved === 1 ? '1 face' : r.moved + ' faces'} named ${name}.`);
    await refreshPeople();
  }

  // Drop a face (or, when it is selected, every selected face of its card)
  // on a person to move it there.
  function dropTarget(card, name) {
    card.addEventListener('dragover', (e) => {
      if (!e.dataTransfer.types.includes('text/x-fv-face')) return;
      e.preventDefault();
      card.classList.add('over');
    });
    card.addEventListener('dragleave', () => card.classList.remove('over'));
    card.addEventListener('drop', (e) => {
      e.preventDefault();
      card.classList.remove('over');
      const id = Number(e.dataTransfer.getData('text/x-fv-face'));
      const from = document.querySelector(`li.face[data-face-id="${id}"]`);
      const fromCard = from && from.closest('.group');
      const sel = fromCard ? fromCard.selected() : [];
      if (!id || fromCard === card) return;
      assignFaces(card, sel.includes(id) ? sel : [id], name);
    });
  }

  function personCard(p, i) {
    const card = groupCard('person', `${p.name} · ${p.faces.length === 1 ? '1 face' : p.faces.length + ' faces'}`,
                           p.faces, false);
    card.dataset.name = p.name;
    card.dataset.id = p.id;
    const err = $('.error', card);
    const split = nameForm(`person-move-${i}`, `Move the selected faces of ${p.name} to`, 'Move selected',
                           (name) => assignFaces(card, card.selected(), name));
    $('button', split).setAttribute('aria-label', `Move the selected faces of ${p.name}`);
    $('input', split).placeholder = 'Move to…';
    card.insertBefore(split, err);
    const others = people.filter((q) => q.id !== p.id);
    if (others.length) {
      const merge = document.createElement('form');
      merge.className = 'row';
      const label = document.createElement('label');
      label.htmlFor = `person-merge-${i}`;
      label.textContent = `Merge ${p.name} into`;
      const sel = document.createElement('select');
      sel.id = `person-merge-${i}`;
      sel.append(...others.map((q) => new Option(q.name, q.id)));
      const go = document.createElement('button');
      go.type = 'submit';
      go.className = 'btn small ghost';
      go.textContent = 'Merge';
      go.setAttribute('aria-label', `Merge ${p.name} into the chosen person`);
      merge.append(label, sel, go);
      merge.addEventListener('submit', async (e) => {
        e.preventDefault();
        card.error('');
        try {
          await api('POST', `/api/v1/subjects/${sel.value}/merge`, {from_subject_id: p.id}, 'Merging…');
        } catch (ex) {
          card.error(plain(ex));
          return;
        }
        peopleStatus(`${p.name} merged into ${sel.selectedOptions[0].text}.`);
        await refreshPeople();
      });
      card.insertBefore(merge, err);
    }
    dropTarget(card, p.name);
    return card;
  }

  // The groups of unassigned faces ({face_id, box}), largest first, each
  // with its faces checked and a name field; then the faces in no group,
  // unchecked, to name by choice.
  function showClusters(r) {
    const faces = (list) => list.map((f) => ({id: f.face_id, pic: facePics.get(f.face_id) || null}));
    $('#clusters').replaceChildren(...r.clusters.map((c, i) => {
      const card = groupCard('cluster', `Group ${i + 1} · ${c.length} faces`, faces(c), true);
      card.insertBefore(nameForm(`cluster-name-${i}`, `Name for group ${i + 1}`, 'Name',
                                 (name) => assignFaces(card, card.selected(), name)), $('.error', card));
      return card;
    }));
    $('#clusters-empty').hidden = r.clusters.length > 0;
    const noise = r.noise.length ? [groupCard('noise', r.noise.length === 1 ? '1 face' : `${r.noise.length} faces`,
                                              faces(r.noise), false)] : [];
    for (const card of noise)
      card.insertBefore(nameForm('noise-name', 'Name for the selected faces', 'Name selected',
                                 (name) => assignFaces(card, card.selected(), name)), $('.error', card));
    $('#noise').replaceChildren(...noise);
    $('#noise-empty').hidden = r.noise.length > 0;
  }

  function clusterOptions() {
    const fmr = $('#people-fmr').value;
    return fmr ? {fmr: Number(fmr)} : {};
  }

  // Groups the unassigned faces (errors go to the caller).
  async function cluster() {
    const r = await api('POST', '/api/v1/faces/cluster', {source: 'unassigned', ...clusterOptions()},
                        'Grouping faces…');
    const o = r.operating_point;
    $('#clusters-op').textContent = o && o.fmr ? `Grouped at a false-match rate of ${o.fmr.toExponential(0)} ` +
      `(faces at most ${fmt(o.threshold)} apart)` + (r.method ? `, by ${r.method.replace(/-/g, ' ')}.` : '.') : '';
    showClusters(r);
  }

  // Everything the view shows, from the server: people and their faces,
  // then the groups of the faces with no name.
  let peopleVersion = 0;
  async function refreshPeople() {
    try {
      const r = await api('GET', '/api/v1/subjects?limit=1000', undefined, 'Loading people…');
      const lists = await Promise.all(r.results.map((s) =>
        api('GET', `/api/v1/subjects/${s.id}/faces`, undefined, 'Loading people…')));
      people = r.results.map((s, i) => ({id: s.id, name: s.name,
        faces: lists[i].results.map((f) => ({id: f.id, pic: facePics.get(f.id) || null}))}));
      $('#people-names').replaceChildren(...people.map((p) => new Option(p.name)));
      $('#people').replaceChildren(...people.map(personCard));
      $('#people-empty').hidden = people.length > 0;
      await cluster();
    } catch (e) {
      peopleProblems([['', plain(e)]], true);
    } finally {
      $('#panel-people').dataset.version = String(++peopleVersion); // tests wait on this
    }
  }

  const MAX_BATCH = 100;

  // Stores every face of every photo as an unassigned face, one photo per
  // request (each is embedded on the server), then groups them all.
  async function addPhotos(files) {
    const problems = [];
    peopleProblems(problems);
    if (files.length > MAX_BATCH) {
      problems.push(['', `Add at most ${MAX_BATCH} photos at a time; the first ${MAX_BATCH} are used.`]);
      files = files.slice(0, MAX_BATCH);
    }
    let added = 0;
    for (const [i, file] of files.entries()) {
      peopleStatus(`Finding faces in photo ${i + 1} of ${files.length}…`);
      if (file.size > MAX_BYTES) {
        problems.push([file.name, plain({code: 'payload_too_large'})]);
        continue;
      }
      let bitmap = null;
      try { bitmap = await createImageBitmap(file); } catch (e) { bitmap = null; }
      const photo = {name: file.name, bitmap};
      const form = new FormData();
      form.append('image', file, file.name);
      let r;
      try {
        r = await api('POST', '/api/v1/faces', form, `Finding faces in ${file.name}…`);
      } catch (e) {
        problems.push([file.name, plain(e)]);
        continue;
      }
      for (const f of r.faces) facePics.set(f.face_id, {photo, box: f.box});
      added += r.faces.length;
    }
    peopleStatus(`${added} face${added === 1 ? '' : 's'} added from ${files.length} photo${files.length === 1 ? '' : 's'}.`);
    peopleProblems(problems);
    await refreshPeople();
  }

  (() => {
    const input = $('#file-people'), drop = $('#people-drop');
    input.addEventListener('change', () => {
      const files = [...input.files];
      input.value = '';
      if (files.length) addPhotos(files);
    });
    drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
    drop.addEventListener('dragleave', () => drop.classList.remove('over'));
    drop.addEventListener('drop', (e) => {
      e.preventDefault();
      drop.classList.remove('over');
      const files = [...e.dataTransfer.files].filter((f) => f.type.startsWith('image/') || !f.type);
      if (files.length) addPhotos(files);
    });
    $('#people-regroup').addEventListener('click', () => refreshPeople());
    $('#people-fmr').addEventListener('change', () => refreshPeople());
  })();

  document.body.dataset.ready = '1';
})();
