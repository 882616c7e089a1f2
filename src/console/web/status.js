/* copilot-edge gateway status page: polls GET /v1/status every 3 s. DOM via createElement / textContent. */
(function () {
  'use strict';
  var C = window.CE, t = C.t, el = C.el;
  var $ = function (id) { return document.getElementById(id); };
  var PERIOD = 3000;
  var COLS = [['link', 'colLink'], ['since', 'colSince'], ['backlog-records', 'colRecords'], ['backlog-bytes', 'colBytes'],
    ['oldest-age', 'colOldest'], ['last-success', 'colSuccess'], ['last-error', 'colError']];
  var lastWarnings = null;
  var lastGaps = null;

  function text(node, v) {
    v = v === null || v === undefined || v === '' ? '–' : String(v);
    if (node.textContent !== v) node.textContent = v;
  }

  function ago(ts) {
    if (!ts) return t('never');
    var d = new Date(ts);
    if (isNaN(d)) return '–';
    return C.time(d, true) + ' (' + t('ago', { d: C.duration((Date.now() - d.getTime()) / 1000) }) + ')';
  }

  function row(tbody, name) {
    var rows = tbody.querySelectorAll('tr'), i;
    for (i = 0; i < rows.length; i++) if (rows[i].getAttribute('data-sink') === name) return rows[i];
    var tr = el('tr', { 'data-sink': name }, el('th', { scope: 'row', text: name }));
    COLS.forEach(function (c) { tr.append(el('td', { class: c[0], 'data-label': t(c[1]) })); });
    tbody.append(tr);
    return tr;
  }

  function drawSinks(sinks, authed) {
    var tbody = $('sinks').tBodies[0], keep = {};
    sinks.forEach(function (s) {
      var name = String(s.name || '?');
      keep[name] = 1;
      var tr = row(tbody, name), link = String(s.link || 'unknown');
      var cell = tr.querySelector('.link');
      if (cell.textContent !== link) {
        C.clear(cell).append(el('span', { class: 'dot', 'aria-hidden': 'true' }), link);
        cell.className = 'link link-' + link.replace(/[^\w-]/g, '');
      }
      tr.classList.toggle('down', link === 'offline' || link === 'auth_failed');
      text(tr.querySelector('.since'), s.since ? C.time(s.since) : null);
      text(tr.querySelector('.backlog-records'), Number(s.backlog_records || 0).toLocaleString(C.LANG));
      text(tr.querySelector('.backlog-bytes'), C.bytes(s.backlog_bytes));
      text(tr.querySelector('.oldest-age'), s.oldest_pending_age_seconds == null ? null : C.duration(s.oldest_pending_age_seconds));
      text(tr.querySelector('.last-success'), ago(s.last_success));
      text(tr.querySelector('.last-error'), authed ? s.last_error : null);
    });
    Array.prototype.slice.call(tbody.rows).forEach(function (tr) {
      if (!keep[tr.getAttribute('data-sink')]) tr.remove();
    });
    $('sinks-none').hidden = sinks.length > 0;
  }

  function drawSpool(sp) {
    var box = C.clear($('spool'));
    if (!sp) { box.append(el('p', { class: 'hint', text: t('spoolNone') })); return; }
    box.append(el('p', { class: 'spool-use', text: t('spoolUse', { u: C.bytes(sp.bytes), m: C.bytes(sp.max_bytes), f: C.bytes(sp.free_disk_bytes) }) }));
    if (sp.max_bytes > 0) {
      box.append(el('progress', { max: sp.max_bytes, value: Math.min(sp.bytes || 0, sp.max_bytes), 'aria-label': t('spool') }));
    }
    if (sp.min_free_bytes) box.append(el('p', { class: 'hint', text: t('spoolMin', { b: C.bytes(sp.min_free_bytes) }) }));
    if (sp.write_blocked) box.append(el('p', { class: 'warn write-blocked', text: t('writeBlocked') }));
  }

  function drawWarnings(list, authed) {
    var note = $('warnings-note');
    var key = authed ? JSON.stringify(list || []) : '';
    if (key === lastWarnings) return;
    lastWarnings = key;
    var ul = C.clear($('warnings'));
    if (!authed) { note.textContent = t('warningsAuth'); note.hidden = false; return; }
    (list || []).forEach(function (w) {
      var lvl = String(w.level || '');
      ul.append(el('li', null,
        el('span', { class: 'w-time', text: C.time(w.ts, true) }), ' ',
        el('span', { class: 'w-level ' + lvl.replace(/[^\w-]/g, ''), text: lvl }), ' ',
        el('span', { class: 'w-event', text: String(w.event || '') }), ' ',
        w.detail ? el('span', { class: 'w-detail', text: String(w.detail) }) : null));
    });
    note.textContent = t('warningsNone');
    note.hidden = (list || []).length > 0;
  }

  // Refusals and 1-2 star ratings, newest first: what the next SOP should cover.
  function drawGaps(list, authed) {
    var note = $('gaps-note');
    var key = authed ? JSON.stringify(list || []) : '';
    if (key === lastGaps) return;
    lastGaps = key;
    var ul = C.clear($('gaps'));
    if (!authed) { note.textContent = t('gapsAuth'); note.hidden = false; return; }
    (list || []).forEach(function (g) {
      ul.append(el('li', null,
        el('span', { class: 'w-time', text: C.time(g.at, true) }), ' ',
        el('span', { class: 'w-event', text: String(g.reason || '') }), ' ',
        el('span', { class: 'w-detail', text: [g.plant_id, g.equipment_id, g.equipment_class, g.language].map(String).join(' · ') }), ' ',
        el('q', { class: 'gap-question', text: String(g.text || '') })));
    });
    note.textContent = t('gapsNone');
    note.hidden = (list || []).length > 0;
  }

  function draw(s, rejected) {
    var authed = s.authenticated === true;
    text($('gw-id'), s.gateway_id);
    text($('site'), s.site);
    text($('version'), s.version);
    text($('uptime'), C.duration(s.uptime_seconds));
    var kb = s.knowledge_base;
    text($('kb'), kb ? t('kb', { n: kb.documents, t: C.time(kb.loaded_at) }) : null);
    text($('kb-version'), !kb || !kb.version ? null : kb.version === kb.source ? kb.source
      : kb.version + ' (' + [kb.source, kb.hash].filter(Boolean).join(', ') + ')');
    text($('kb-check'), kb && kb.last_check ? ago(kb.last_check) : t('kbNoSource'));
    $('kb-error-row').hidden = !(authed && kb && kb.last_error);
    text($('kb-error'), authed && kb ? kb.last_error : null);
    $('auth-note').hidden = authed;
    text($('auth-text'), (rejected ? t('authBad') + ' ' : '') + t('authNote'));
    var ck = s.clock;
    $('clock-bad').hidden = !ck || ck.ok !== false;
    text($('clock-bad'), ck && ck.ok === false ? t('clockBad', { s: ck.skew_seconds }) : '');
    var tf = s.tokens_file;
    $('tokens-bad').hidden = !tf || tf.valid !== false;
    text($('tokens-bad'), tf && tf.valid === false ? t('tokensBad') + (tf.error ? ' (' + tf.error + ')' : '') : '');
    drawSinks(Array.isArray(s.sinks) ? s.sinks : [], authed);
    drawSpool(s.spool);
    drawWarnings(s.warnings, authed);
    drawGaps(s.knowledge_gaps, authed);
    text($('updated'), t('updated', { t: C.time(new Date(), true) }));
  }

  async function poll() {
    var started = Date.now();
    try {
      var s, rejected = false;
      try {
        s = await C.api('/v1/status', { timeout: 10000, probe: false });
      } catch (x) {
        // The tab's token is not accepted (401) or the address is slowed down after failures
        // (429): show the public view and say so.
        if (x.kind !== 'unauthorized' && x.status !== 429) throw x;
        rejected = true;
        s = await C.api('/v1/status', { timeout: 10000, probe: false, token: '' });
      }
      if (!s || typeof s !== 'object') throw new Error('bad status');
      draw(s, rejected);
      $('status-error').hidden = true;
      $('main').classList.remove('stale');
    } catch (x) {
      text($('status-error'), t('unreachable'));
      $('status-error').hidden = false;
      $('main').classList.add('stale');
    }
    setTimeout(poll, Math.max(500, PERIOD - (Date.now() - started)));
  }

  C.i18n();
  poll();
})();
