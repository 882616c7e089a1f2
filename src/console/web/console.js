/* copilot-edge technician console. DOM built with createElement / textContent only. */
(function () {
  'use strict';
  var C = window.CE, t = C.t, el = C.el;
  var $ = function (id) { return document.getElementById(id); };
  var RECENT_KEY = 'copilot-edge.recent';
  var current = null;   // the answer on screen
  var score = 0;        // chosen stars
  var lastCite = null;  // citation button that opened the SOP
  var assets = [];      // GET /v1/assets
  var docs = {};        // SOP cache by id
  var busy = {};

  function show(view) {
    $('view-signin').hidden = view !== 'signin';
    $('view-ask').hidden = view !== 'ask';
  }

  function setState(text, isError) {
    var s = $('state');
    s.textContent = text || '';
    s.classList.toggle('err', !!isError);
  }

  function setBusy(btn, on, label) {
    busy[btn.id] = on;
    btn.setAttribute('aria-busy', on ? 'true' : 'false');
    if (on) { btn.dataset.label = btn.textContent; if (label) btn.textContent = label; }
    else if (btn.dataset.label) btn.textContent = btn.dataset.label;
  }

  // ---- sign-in ----
  function signinView(msg) {
    C.clearToken();
    closeDoc(false);
    setState('');
    show('signin');
    $('signin-error').textContent = msg || '';
    $('token').value = '';
    $('token').focus();
  }

  async function signin(e) {
    e.preventDefault();
    var btn = $('signin-btn');
    if (busy[btn.id]) return;
    var tok = $('token').value.trim();
    var err = $('signin-error');
    if (!tok) { err.textContent = t('tokenMissing'); $('token').focus(); return; }
    err.textContent = '';
    setBusy(btn, true, t('checking'));
    try {
      var r = await C.api('/v1/assets', { token: tok });
      C.setToken(tok);
      $('token').value = '';
      enter(r, true);
    } catch (x) {
      err.textContent = x.kind === 'unauthorized' ? t('tokenRejected') : C.errText(x);
      $('token').focus();
    } finally {
      setBusy(btn, false);
    }
  }

  function enter(r, focus) {
    assets = (r && Array.isArray(r.assets)) ? r.assets : assets;
    fillEquipment();
    show('ask');
    if (focus) {
      var f = ['plant', 'equipment', 'problem'].map($).filter(function (n) { return !n.value.trim(); })[0];
      (f || $('problem')).focus();
    }
  }

  function fillEquipment() {
    var dl = C.clear($('equipment-list')), seen = {};
    assets.forEach(function (a) {
      if (!a || !a.id || seen[a.id]) return;
      seen[a.id] = 1;
      var label = [a['class'], [a.make, a.model].filter(Boolean).join(' '), a.line, a.location].filter(Boolean).join(' · ');
      dl.append(el('option', { value: a.id, label: label || null }));
    });
    loadRecent().forEach(function (r) {
      if (r && r.equipment && !seen[r.equipment]) { seen[r.equipment] = 1; dl.append(el('option', { value: r.equipment })); }
    });
  }

  function signout() {
    C.clearToken();
    // A shared tablet: the next person must not read this one's questions and answers.
    try { localStorage.removeItem(RECENT_KEY); } catch (e) { /* private mode */ }
    drawRecent();
    docs = {};
    current = null;
    $('answer').hidden = true;
    signinView('');
  }

  // ---- ask ----
  async function ask(e) {
    e.preventDefault();
    var btn = $('ask-btn');
    if (busy[btn.id]) return;
    var fields = [['plant', 'plant'], ['equipment', 'equipment'], ['problem', 'problem']];
    for (var i = 0; i < fields.length; i++) {
      var f = $(fields[i][0]);
      var empty = !f.value.trim();
      f.setAttribute('aria-invalid', empty ? 'true' : 'false');
      if (empty) { setState(t('fill', { f: t(fields[i][1]) }), true); f.focus(); return; }
    }
    var plant = $('plant').value.trim(), equipment = $('equipment').value.trim(), problem = $('problem').value.trim();
    var body = { plant_id: plant, equipment_id: equipment, problem_description: problem };
    var defects = $('defects').value.split(',').map(function (s) { return s.trim(); }).filter(Boolean)
      .map(function (label) { return { label: label, confidence: 1.0 }; });
    if (defects.length) body.observed_defects = defects;
    $('answer').hidden = true;
    setState(t('asking'));
    setBusy(btn, true);
    try {
      var r = await C.api('/v1/diagnose', { method: 'POST', body: body });
      setState('');
      saveRecent({ ts: new Date().toISOString(), plant: plant, equipment: equipment, problem: problem, response: r });
      render(r);
    } catch (x) {
      if (x.kind === 'unauthorized') signinView(t('tokenExpired'));
      else setState(C.errText(x), true);
    } finally {
      setBusy(btn, false);
    }
  }

  // ---- answer ----
  var CITE = /\s*\[([^\[\]\s]+)(?:\s+([^\[\]]*))?\]\s*$/;

  function stepItem(s, lang) {
    var m = CITE.exec(s), text = m ? s.slice(0, m.index) : s;
    var span = el('span', { class: 'step-text', lang: lang });
    var pre = /^([\w.\/-]{1,64}):\s+/.exec(text);   // "pump-7: " prefix, shown quieter
    if (pre) { span.append(el('span', { class: 'step-eq', text: pre[1] + ':' }), ' ' + text.slice(pre[0].length)); }
    else span.textContent = text;
    var box = el('input', { type: 'checkbox' });
    var li = el('li', null, el('label', null, box, ' ', span));
    box.addEventListener('change', function () { li.classList.toggle('done', box.checked); });
    if (m) {
      var n = m[2] && /\d+/.exec(m[2]);
      var label = m[1] + (n ? ' · ' + t('step') + ' ' + n[0] : '');
      li.append(el('button', { type: 'button', class: 'cite', 'data-doc': m[1], 'aria-label': t('openSop', { d: label }), text: label }));
    }
    return li;
  }

  function render(r, savedAt) {
    current = r || {};
    var g = current.rag_guidance || {}, u = current.understood || {};
    var lang = /^(en|de|es|fr|it|pt|pl|nl|cs|tr|ro)$/.test(u.language || '') ? u.language : null;
    var notes = Array.isArray(g.safety_notes) ? g.safety_notes : [];
    var ul = C.clear($('safety-list'));
    if (lang) ul.lang = lang; else ul.removeAttribute('lang');
    notes.forEach(function (n) { ul.append(el('li', { text: String(n) })); });
    $('safety').hidden = !notes.length;

    var ok = current.answer_status === 'supported';
    $('refusal').hidden = ok;
    var reason = 'reason_' + (current.refusal_reason || 'other');
    $('refusal-reason').textContent = t(t(reason) === reason ? 'reason_other' : reason);
    // Not a fault report, or a language the gateway does not read: no "make it safe" heading.
    var plain = current.answer_status === 'not_a_fault_report' || current.answer_status === 'language_not_supported';
    $('refusal-title').textContent = t(plain ? 'refusal_' + current.answer_status : 'refusal');
    $('refusal-escalate').hidden = plain;
    $('steps-block').hidden = !ok;
    var ol = C.clear($('steps'));
    if (ok) (g.recommended_steps || []).forEach(function (s) { ol.append(stepItem(String(s), lang)); });

    $('confidence').textContent = t('confidence', { n: Math.round((Number(current.confidence_score) || 0) * 100) });
    var a = current.agent || {};
    $('author').textContent = a.fallback ? t('authorFallback')
      : (a.name === 'llm_report_agent' || (a.engine && a.engine !== 'bm25-local')) ? t('authorLlm', { m: a.engine || '' })
      : t('authorLocal');
    var as = u.asset;
    var assetText = as ? [as.id, [as['class'], [as.make, as.model].filter(Boolean).join(' '), as.line, as.location].filter(Boolean).join(', ')].filter(Boolean).join(' — ')
      : t('noAsset');
    var langKey = 'lang_' + (u.language || '');
    $('understood').textContent = t('understood', { l: u.language ? (t(langKey) === langKey ? u.language : t(langKey)) : '–', a: assetText });
    var rep = $('report-text');
    rep.textContent = current.generated_report || '';
    if (lang) rep.lang = lang; else rep.removeAttribute('lang');
    $('report').open = false;
    $('answer').setAttribute('aria-label', t('answerFor', { e: current.equipment_id || '' }));

    score = 0;
    drawStars();
    $('comment').value = '';
    $('rate-result').textContent = '';
    $('rating').hidden = !current.request_id;

    if (savedAt) setState(t('savedAnswer', { t: C.time(savedAt) }));
    $('answer').hidden = false;
    $('answer').focus();
  }

  // ---- SOP dialog ----
  async function openDoc(btn) {
    var id = btn.getAttribute('data-doc');
    lastCite = btn;
    var d = docs[id];
    if (!d) {
      if (busy.doc) return;
      busy.doc = true;
      btn.setAttribute('aria-busy', 'true');
      setState(t('opening', { d: id }));
      try {
        d = await C.api('/v1/documents/' + encodeURIComponent(id));
        docs[id] = d;
        setState('');
      } catch (x) {
        if (x.kind === 'unauthorized') signinView(t('tokenExpired'));
        else setState(x.status === 404 ? t('docMissing', { d: id }) : C.errText(x), true);
        return;
      } finally {
        busy.doc = false;
        btn.setAttribute('aria-busy', 'false');
      }
    }
    var title = C.clear($('doc-title'));
    title.append(el('span', { class: 'doc-id', text: d.id || id }), String(d.title || ''));
    var body = C.clear($('doc-body'));
    body.append(C.md(d.markdown || ''));
    for (var i = 0; i < document.body.children.length; i++) {
      var n = document.body.children[i];
      if (n.id !== 'doc') n.inert = true;
    }
    document.body.classList.add('modal');
    $('doc').hidden = false;
    body.scrollTop = 0;
    title.focus();
  }

  function closeDoc(refocus) {
    if ($('doc').hidden) return;
    $('doc').hidden = true;
    document.body.classList.remove('modal');
    for (var i = 0; i < document.body.children.length; i++) document.body.children[i].inert = false;
    if (refocus !== false && lastCite && document.contains(lastCite)) lastCite.focus();
  }

  // ---- rating ----
  function drawStars() {
    document.querySelectorAll('button.star').forEach(function (b) {
      var n = Number(b.getAttribute('data-score'));
      b.setAttribute('aria-pressed', n === score ? 'true' : 'false');
      b.classList.toggle('on', n <= score);
    });
  }

  async function rate() {
    var btn = $('rate-btn'), out = $('rate-result');
    if (busy[btn.id] || !current || !current.request_id) return;
    if (!score) { out.textContent = t('rateFirst'); return; }
    var body = { request_id: current.request_id, score: score };
    var c = $('comment').value.trim().slice(0, 1000);
    if (c) body.comment = c;
    out.textContent = t('sending');
    setBusy(btn, true);
    try {
      await C.api('/v1/feedback', { method: 'POST', body: body });
      out.textContent = t('rated');
    } catch (x) {
      if (x.kind === 'unauthorized') { out.textContent = ''; signinView(t('tokenExpired')); }
      else if (x.status === 409 || x.code === 'already_rated') out.textContent = t('alreadyRated');
      else if (x.code === 'unknown_request_id' || x.status === 404) out.textContent = t('expired');
      else out.textContent = C.errText(x);
    } finally {
      setBusy(btn, false);
    }
  }

  // ---- recent questions (localStorage, no token) ----
  function loadRecent() {
    try {
      var a = JSON.parse(localStorage.getItem(RECENT_KEY) || '[]');
      return Array.isArray(a) ? a : [];
    } catch (e) { return []; }
  }

  function saveRecent(entry) {
    var a = [entry].concat(loadRecent()).slice(0, 20);
    for (var n = a.length; n > 0; n = Math.floor(n / 2)) {
      try { localStorage.setItem(RECENT_KEY, JSON.stringify(a.slice(0, n))); break; } catch (e) { /* quota: keep fewer */ }
    }
    drawRecent();
    fillEquipment();
  }

  function drawRecent() {
    var ul = C.clear($('recent')), list = loadRecent();
    list.forEach(function (r, i) {
      if (!r || typeof r !== 'object') return;
      var st = r.response && r.response.answer_status === 'supported' ? '' : ' · ⚠';
      ul.append(el('li', null, el('button', { type: 'button', class: 'recent-item', 'data-i': i },
        el('span', { class: 'ri-head' },
          el('span', { class: 'ri-eq', text: String(r.equipment || '–') + ' · ' + String(r.plant || '') + st }),
          el('span', { class: 'ri-time', text: C.time(r.ts) })),
        el('span', { class: 'ri-problem', text: String(r.problem || '') }))));
    });
    $('recent-none').hidden = list.length > 0;
  }

  function reopen(i) {
    var r = loadRecent()[i];
    if (!r || !r.response) return;
    $('plant').value = r.plant || '';
    $('equipment').value = r.equipment || '';
    $('problem').value = r.problem || '';
    setState('');
    render(r.response, r.ts);
  }

  // ---- wiring ----
  function init() {
    C.i18n();
    document.querySelectorAll('button.star').forEach(function (b) {
      b.setAttribute('aria-label', t('star', { n: b.getAttribute('data-score') }));
    });
    $('signin-form').addEventListener('submit', signin);
    $('ask-form').addEventListener('submit', ask);
    $('signout-btn').addEventListener('click', signout);
    ['plant', 'equipment', 'problem'].forEach(function (id) {
      $(id).addEventListener('input', function () { $(id).removeAttribute('aria-invalid'); });
    });
    $('steps').addEventListener('click', function (e) {
      var b = e.target.closest('button.cite');
      if (b) openDoc(b);
    });
    document.querySelector('.stars').addEventListener('click', function (e) {
      var b = e.target.closest('button.star');
      if (!b) return;
      score = Number(b.getAttribute('data-score'));
      drawStars();
      $('rate-result').textContent = '';
    });
    $('rate-btn').addEventListener('click', rate);
    $('recent').addEventListener('click', function (e) {
      var b = e.target.closest('button.recent-item');
      if (b) reopen(Number(b.getAttribute('data-i')));
    });
    $('doc-close').addEventListener('click', function () { closeDoc(); });
    $('doc').addEventListener('click', function (e) { if (e.target === $('doc')) closeDoc(); });
    document.addEventListener('keydown', function (e) {
      if (e.key === 'Escape' && !$('doc').hidden) { e.preventDefault(); closeDoc(); }
    });
    drawRecent();

    // Prefill the plant from the gateway's site (no token needed).
    C.api('/v1/status', { timeout: 8000, probe: false }).then(function (s) {
      if (s && s.site && !$('plant').value.trim()) $('plant').value = s.site;
    }, function () {
      var r = loadRecent()[0];
      if (r && r.plant && !$('plant').value.trim()) $('plant').value = r.plant;
    });

    if (!C.getToken()) { show('signin'); return; }
    enter(null, false);   // optimistic: the token of this tab is checked in the background
    C.api('/v1/assets').then(function (r) { enter(r, false); }, function (x) {
      if (x.kind === 'unauthorized') signinView(t('tokenExpired'));
      else setState(C.errText(x), true);
    });
  }

  init();
})();
