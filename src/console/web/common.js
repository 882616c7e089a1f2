/* copilot-edge console: shared helpers (i18n, DOM, API fetch, safe Markdown, formatting).
   Never builds HTML from strings: everything goes through createElement / textContent. */
(function () {
  'use strict';

  var DICT = {
    en: {
      consoleTitle: 'Machine help · copilot-edge', statusTitle: 'Gateway status · copilot-edge',
      tagline: 'Repair steps from your plant’s SOPs', navStatus: 'Gateway status', navConsole: 'Technician console',
      signinTitle: 'Sign in', signinHelp: 'Enter the access token from your supervisor or plant IT. It is kept only in this browser tab.',
      token: 'Access token', signin: 'Sign in', checking: 'Checking…', tokenMissing: 'Enter your access token',
      tokenRejected: 'Token not accepted', tokenExpired: 'Your token is no longer valid — sign in again',
      askTitle: 'Describe the problem', signout: 'Sign out', plant: 'Plant', equipment: 'Equipment ID',
      equipmentHint: 'As on the machine plate, e.g. pump-7', problem: 'What is wrong?',
      problemHint: 'What you see, hear or smell, and since when.', defects: 'Visible defects (optional)',
      defectsHint: 'Separate with commas, e.g. crack, leak', ask: 'Get repair steps', asking: 'Asking…',
      fill: 'Please fill in: {f}', offline: 'No connection to the gateway',
      restarting: 'The agent is restarting, try again in a moment', timeout: 'The gateway did not answer in time',
      httpError: 'The gateway answered with error {s}', answerFor: 'Answer for {e}', safety: 'Safety first — before you start',
      refusal: 'No SOP covers this — make the equipment safe and escalate',
      reason_no_matching_sop: 'No procedure in the knowledge base matches this problem.',
      reason_out_of_scope: 'This does not look like a problem with plant equipment.',
      reason_no_sop_for_equipment_class: 'There is no procedure for this type of equipment yet.',
      reason_no_sop_for_machine: 'There is no procedure for this machine yet.',
      reason_not_a_fault_report: 'Describe what the machine does wrong (what you see, hear or smell) to get repair steps. For stock, orders, schedules or documents ask your supervisor or the maintenance office.',
      reason_language_not_supported: 'This gateway does not read this language yet. Please write in English, German, Spanish, French, Italian, Portuguese, Polish, Dutch, Czech, Turkish or Romanian.',
      refusal_not_a_fault_report: 'This does not look like a fault report', refusal_language_not_supported: 'Language not supported',
      reason_other: 'The knowledge base has no procedure that supports an answer.',
      escalate: 'Stop the equipment, make it safe, and call your supervisor or the maintenance engineer.',
      steps: 'Repair steps', stepsHint: 'Tick each step when done. The SOP button shows the procedure text.',
      step: 'step', openSop: 'Open {d}', confidence: 'Confidence {n} %', authorLocal: 'Written by the local engine',
      authorLlm: 'Written by LLM {m}', authorFallback: 'Local engine (LLM unavailable)', understood: 'Understood: {l} · {a}',
      noAsset: 'equipment not in the asset register', report: 'Full report', rateTitle: 'Did this help?',
      star: '{n} of 5 stars', comment: 'Comment (optional)', rate: 'Send rating', rateFirst: 'Choose 1 to 5 stars first',
      rated: 'Rating recorded — thank you', alreadyRated: 'This answer was already rated',
      expired: 'This answer has expired and can no longer be rated', sending: 'Sending…',
      recent: 'Recent questions on this device', recentNone: 'No questions yet.', recentKept: 'Kept on this device until you sign out.', savedAnswer: 'Saved answer from {t}',
      opening: 'Opening {d}…', docMissing: 'SOP {d} was not found', close: 'Close', docBody: 'Procedure text',
      lang_en: 'English', lang_de: 'German', lang_es: 'Spanish', lang_fr: 'French', lang_it: 'Italian', lang_pt: 'Portuguese', lang_pl: 'Polish', lang_nl: 'Dutch', lang_cs: 'Czech', lang_tr: 'Turkish', lang_ro: 'Romanian',
      gateway: 'Gateway', site: 'Site', version: 'Version', uptime: 'Uptime', kbLabel: 'Knowledge base',
      kb: '{n} documents, loaded {t}', kbVersionLabel: 'Knowledge version', kbCheckLabel: 'Last bundle check', kbErrorLabel: 'Last bundle refused', kbNoSource: 'no bundle source configured', authNote: 'Sink errors and warnings are shown only with a signed-in token.',
      authBad: 'The token of this tab is not accepted.', tokensBad: 'The tokens file does not parse: the agent keeps its last good set of tokens.', clockBad: 'This gateway\'s clock differs from its receivers\' by {s} s: check NTP.', authLink: 'Sign in on the technician console',
      sinks: 'Data links (sinks)', colSink: 'Sink', colLink: 'Link', colSince: 'Since', colRecords: 'Backlog',
      colBytes: 'Backlog size', colOldest: 'Oldest pending', colSuccess: 'Last success', colError: 'Last error',
      noSinks: 'No sinks configured.', spool: 'Spool (store-and-forward buffer)', spoolUse: 'used {u} of {m}, free disk {f}',
      spoolMin: 'Writing stops when free disk falls below {b}.', spoolNone: 'No spool configured.',
      writeBlocked: 'Spool writes are blocked (spool full or too little free disk) — new records cannot be buffered.',
      warnings: 'Recent warnings', warningsNone: 'No recent warnings.', warningsAuth: 'Sign in to see warnings.',
      gaps: 'Questions no SOP answered', gapsNone: 'None since the agent started.', gapsAuth: 'Sign in to see the questions no SOP answered.',
      updated: 'Updated {t}', unreachable: 'Status unavailable: gateway unreachable. Retrying…', loading: 'Loading…',
      ago: '{d} ago', never: 'never', d: 'd'
    },
    de: {
      consoleTitle: 'Maschinenhilfe · copilot-edge', statusTitle: 'Gateway-Status · copilot-edge',
      tagline: 'Reparaturschritte aus den Arbeitsanweisungen Ihres Werks', navStatus: 'Gateway-Status', navConsole: 'Techniker-Konsole',
      signinTitle: 'Anmelden', signinHelp: 'Geben Sie den Zugangstoken von Ihrer Vorgesetzten oder der Werks-IT ein. Er bleibt nur in diesem Browser-Tab gespeichert.',
      token: 'Zugangstoken', signin: 'Anmelden', checking: 'Wird geprüft…', tokenMissing: 'Bitte Zugangstoken eingeben',
      tokenRejected: 'Token nicht akzeptiert', tokenExpired: 'Ihr Token ist nicht mehr gültig — bitte neu anmelden',
      askTitle: 'Problem beschreiben', signout: 'Abmelden', plant: 'Werk', equipment: 'Anlagen-ID',
      equipmentHint: 'Wie auf dem Typenschild, z. B. pump-7', problem: 'Was ist das Problem?',
      problemHint: 'Was Sie sehen, hören oder riechen, und seit wann.', defects: 'Sichtbare Schäden (optional)',
      defectsHint: 'Durch Kommas trennen, z. B. Riss, Leck', ask: 'Reparaturschritte anzeigen', asking: 'Anfrage läuft…',
      fill: 'Bitte ausfüllen: {f}', offline: 'Keine Verbindung zum Gateway',
      restarting: 'Der Agent startet neu, bitte gleich noch einmal versuchen', timeout: 'Das Gateway hat nicht rechtzeitig geantwortet',
      httpError: 'Das Gateway meldet Fehler {s}', answerFor: 'Antwort für {e}', safety: 'Sicherheit zuerst — vor Arbeitsbeginn',
      refusal: 'Keine Arbeitsanweisung deckt dies ab — Anlage sicher machen und eskalieren',
      reason_no_matching_sop: 'Keine Anweisung in der Wissensbasis passt zu diesem Problem.',
      reason_out_of_scope: 'Das scheint kein Problem an einer Produktionsanlage zu sein.',
      reason_no_sop_for_equipment_class: 'Für diesen Anlagentyp gibt es noch keine Anweisung.',
      reason_no_sop_for_machine: 'Für diese Maschine gibt es noch keine Anweisung.',
      reason_not_a_fault_report: 'Beschreiben Sie, was die Maschine falsch macht (was Sie sehen, hören oder riechen), um Reparaturschritte zu erhalten. Für Lager, Bestellungen, Schichtpläne oder Unterlagen fragen Sie Ihre Vorgesetzten oder das Instandhaltungsbüro.',
      reason_language_not_supported: 'Dieses Gateway versteht diese Sprache noch nicht. Bitte schreiben Sie auf Deutsch, Englisch, Spanisch, Französisch, Italienisch, Portugiesisch, Polnisch, Niederländisch, Tschechisch, Türkisch oder Rumänisch.',
      refusal_not_a_fault_report: 'Das sieht nicht nach einer Störungsmeldung aus', refusal_language_not_supported: 'Sprache nicht unterstützt',
      reason_other: 'Die Wissensbasis enthält keine Anweisung, die eine Antwort stützt.',
      escalate: 'Anlage stillsetzen, sichern und Vorgesetzte oder Instandhaltung rufen.',
      steps: 'Reparaturschritte', stepsHint: 'Haken Sie erledigte Schritte ab. Die SOP-Schaltfläche zeigt den Anweisungstext.',
      step: 'Schritt', openSop: '{d} öffnen', confidence: 'Konfidenz {n} %', authorLocal: 'Erstellt von der lokalen Engine',
      authorLlm: 'Erstellt von LLM {m}', authorFallback: 'Lokale Engine (LLM nicht verfügbar)', understood: 'Verstanden: {l} · {a}',
      noAsset: 'Anlage nicht im Anlagenverzeichnis', report: 'Vollständiger Bericht', rateTitle: 'Hat das geholfen?',
      star: '{n} von 5 Sternen', comment: 'Kommentar (optional)', rate: 'Bewertung senden', rateFirst: 'Bitte zuerst 1 bis 5 Sterne wählen',
      rated: 'Bewertung gespeichert — danke', alreadyRated: 'Diese Antwort wurde bereits bewertet',
      expired: 'Diese Antwort ist abgelaufen und kann nicht mehr bewertet werden', sending: 'Wird gesendet…',
      recent: 'Letzte Fragen auf diesem Gerät', recentNone: 'Noch keine Fragen.', recentKept: 'Bleiben auf diesem Gerät, bis Sie sich abmelden.', savedAnswer: 'Gespeicherte Antwort vom {t}',
      opening: '{d} wird geöffnet…', docMissing: 'SOP {d} wurde nicht gefunden', close: 'Schließen', docBody: 'Anweisungstext',
      lang_en: 'Englisch', lang_de: 'Deutsch', lang_es: 'Spanisch', lang_fr: 'Französisch', lang_it: 'Italienisch', lang_pt: 'Portugiesisch', lang_pl: 'Polnisch', lang_nl: 'Niederländisch', lang_cs: 'Tschechisch', lang_tr: 'Türkisch', lang_ro: 'Rumänisch',
      gateway: 'Gateway', site: 'Standort', version: 'Version', uptime: 'Laufzeit', kbLabel: 'Wissensbasis',
      kb: '{n} Dokumente, geladen {t}', kbVersionLabel: 'Wissensstand', kbCheckLabel: 'Letzte Bundle-Prüfung', kbErrorLabel: 'Zuletzt abgelehntes Bundle', kbNoSource: 'keine Bundle-Quelle konfiguriert', authNote: 'Fehler der Sinks und Warnungen werden nur mit angemeldetem Token angezeigt.',
      authBad: 'Der Token dieses Tabs wird nicht akzeptiert.', tokensBad: 'Die Token-Datei ist fehlerhaft: der Agent behält die letzten gültigen Tokens.', clockBad: 'Die Uhr dieses Gateways weicht um {s} s von der Gegenstelle ab: NTP prüfen.', authLink: 'In der Techniker-Konsole anmelden',
      sinks: 'Datenverbindungen (Sinks)', colSink: 'Sink', colLink: 'Verbindung', colSince: 'Seit', colRecords: 'Rückstau',
      colBytes: 'Rückstau-Größe', colOldest: 'Ältester offener', colSuccess: 'Letzter Erfolg', colError: 'Letzter Fehler',
      noSinks: 'Keine Sinks konfiguriert.', spool: 'Spool (Zwischenspeicher)', spoolUse: 'belegt {u} von {m}, freier Speicher {f}',
      spoolMin: 'Das Schreiben stoppt, wenn weniger als {b} frei sind.', spoolNone: 'Kein Spool konfiguriert.',
      writeBlocked: 'Schreiben in den Spool ist gesperrt (Spool voll oder zu wenig freier Speicher) — neue Datensätze können nicht gepuffert werden.',
      warnings: 'Letzte Warnungen', warningsNone: 'Keine aktuellen Warnungen.', warningsAuth: 'Zum Anzeigen der Warnungen anmelden.',
      gaps: 'Fragen ohne passende Arbeitsanweisung', gapsNone: 'Keine seit dem Start des Agenten.', gapsAuth: 'Zum Anzeigen der unbeantworteten Fragen anmelden.',
      updated: 'Aktualisiert {t}', unreachable: 'Status nicht verfügbar: Gateway nicht erreichbar. Neuer Versuch…',
      loading: 'Wird geladen…', ago: 'vor {d}', never: 'nie', d: 'T'
    },
    es: {
      consoleTitle: 'Ayuda de máquina · copilot-edge', statusTitle: 'Estado del gateway · copilot-edge',
      tagline: 'Pasos de reparación de los procedimientos de su planta', navStatus: 'Estado del gateway', navConsole: 'Consola del técnico',
      signinTitle: 'Iniciar sesión', signinHelp: 'Introduzca el token de acceso de su supervisor o de TI de planta. Solo se guarda en esta pestaña.',
      token: 'Token de acceso', signin: 'Entrar', checking: 'Comprobando…', tokenMissing: 'Introduzca su token de acceso',
      tokenRejected: 'Token no aceptado', tokenExpired: 'Su token ya no es válido — inicie sesión de nuevo',
      askTitle: 'Describa el problema', signout: 'Cerrar sesión', plant: 'Planta', equipment: 'ID del equipo',
      equipmentHint: 'Como en la placa de la máquina, p. ej. pump-7', problem: '¿Qué falla?',
      problemHint: 'Lo que ve, oye o huele, y desde cuándo.', defects: 'Defectos visibles (opcional)',
      defectsHint: 'Separados por comas, p. ej. grieta, fuga', ask: 'Obtener pasos de reparación', asking: 'Consultando…',
      fill: 'Rellene: {f}', offline: 'Sin conexión con el gateway',
      restarting: 'El agente se está reiniciando, inténtelo de nuevo en un momento', timeout: 'El gateway no respondió a tiempo',
      httpError: 'El gateway respondió con el error {s}', answerFor: 'Respuesta para {e}', safety: 'Seguridad primero — antes de empezar',
      refusal: 'Ningún procedimiento cubre esto — deje el equipo en estado seguro y escale',
      reason_no_matching_sop: 'Ningún procedimiento de la base de conocimiento corresponde a este problema.',
      reason_out_of_scope: 'No parece un problema de un equipo de planta.',
      reason_no_sop_for_equipment_class: 'Todavía no hay procedimiento para este tipo de equipo.',
      reason_no_sop_for_machine: 'Todavía no hay procedimiento para esta máquina.',
      reason_not_a_fault_report: 'Describa qué hace mal la máquina (lo que ve, oye o huele) para recibir pasos de reparación. Para almacén, pedidos, turnos o documentos pregunte a su supervisor o a la oficina de mantenimiento.',
      reason_language_not_supported: 'Esta pasarela aún no entiende este idioma. Escriba en español, inglés, alemán, francés, italiano, portugués, polaco, neerlandés, checo, turco o rumano.',
      refusal_not_a_fault_report: 'Esto no parece un aviso de avería', refusal_language_not_supported: 'Idioma no compatible',
      reason_other: 'La base de conocimiento no tiene un procedimiento que respalde una respuesta.',
      escalate: 'Detenga el equipo, déjelo en estado seguro y avise a su supervisor o a mantenimiento.',
      steps: 'Pasos de reparación', stepsHint: 'Marque cada paso al terminarlo. El botón del SOP muestra el procedimiento.',
      step: 'paso', openSop: 'Abrir {d}', confidence: 'Confianza {n} %', authorLocal: 'Escrito por el motor local',
      authorLlm: 'Escrito por LLM {m}', authorFallback: 'Motor local (LLM no disponible)', understood: 'Entendido: {l} · {a}',
      noAsset: 'equipo no registrado en el inventario', report: 'Informe completo', rateTitle: '¿Le ha ayudado?',
      star: '{n} de 5 estrellas', comment: 'Comentario (opcional)', rate: 'Enviar valoración', rateFirst: 'Elija primero de 1 a 5 estrellas',
      rated: 'Valoración registrada — gracias', alreadyRated: 'Esta respuesta ya fue valorada',
      expired: 'Esta respuesta ha caducado y ya no se puede valorar', sending: 'Enviando…',
      recent: 'Preguntas recientes en este dispositivo', recentNone: 'Aún no hay preguntas.', recentKept: 'Se guardan en este dispositivo hasta que cierre la sesión.', savedAnswer: 'Respuesta guardada del {t}',
      opening: 'Abriendo {d}…', docMissing: 'No se encontró el SOP {d}', close: 'Cerrar', docBody: 'Texto del procedimiento',
      lang_en: 'inglés', lang_de: 'alemán', lang_es: 'español', lang_fr: 'francés', lang_it: 'italiano', lang_pt: 'portugués', lang_pl: 'polaco', lang_nl: 'neerlandés', lang_cs: 'checo', lang_tr: 'turco', lang_ro: 'rumano',
      gateway: 'Gateway', site: 'Sitio', version: 'Versión', uptime: 'Tiempo activo', kbLabel: 'Base de conocimiento',
      kb: '{n} documentos, cargados {t}', kbVersionLabel: 'Versión del conocimiento', kbCheckLabel: 'Última comprobación de paquete', kbErrorLabel: 'Último paquete rechazado', kbNoSource: 'sin fuente de paquetes configurada', authNote: 'Los errores de los sinks y los avisos solo se muestran con un token de sesión.',
      authBad: 'El token de esta pestaña no es aceptado.', tokensBad: 'El archivo de tokens no es válido: el agente mantiene el último conjunto válido.', clockBad: 'El reloj de esta pasarela difiere {s} s del de los receptores: revise NTP.', authLink: 'Iniciar sesión en la consola del técnico',
      sinks: 'Enlaces de datos (sinks)', colSink: 'Sink', colLink: 'Enlace', colSince: 'Desde', colRecords: 'Pendientes',
      colBytes: 'Tamaño pendiente', colOldest: 'Pendiente más antiguo', colSuccess: 'Último éxito', colError: 'Último error',
      noSinks: 'No hay sinks configurados.', spool: 'Spool (búfer de reenvío)', spoolUse: 'usado {u} de {m}, disco libre {f}',
      spoolMin: 'La escritura se detiene si quedan menos de {b} libres.', spoolNone: 'No hay spool configurado.',
      writeBlocked: 'La escritura en el spool está bloqueada (spool lleno o poco disco libre) — los registros nuevos no se pueden guardar.',
      warnings: 'Avisos recientes', warningsNone: 'No hay avisos recientes.', warningsAuth: 'Inicie sesión para ver los avisos.',
      gaps: 'Preguntas sin procedimiento', gapsNone: 'Ninguna desde el inicio del agente.', gapsAuth: 'Inicie sesión para ver las preguntas sin procedimiento.',
      updated: 'Actualizado {t}', unreachable: 'Estado no disponible: gateway inalcanzable. Reintentando…',
      loading: 'Cargando…', ago: 'hace {d}', never: 'nunca', d: 'd'
    }
  };

  var LANG = 'en';
  var langs = navigator.languages || [navigator.language || 'en'];
  for (var i = 0; i < langs.length; i++) {
    var l = String(langs[i] || '').slice(0, 2).toLowerCase();
    if (DICT[l]) { LANG = l; break; }
  }

  /** Translated text for key, with {name} placeholders filled from vars. */
  function t(key, vars) {
    var s = DICT[LANG][key];
    if (s === undefined) s = DICT.en[key];
    if (s === undefined) s = key;
    return vars ? s.replace(/\{(\w+)\}/g, function (m, k) { return vars[k] === undefined ? m : String(vars[k]); }) : s;
  }

  /** Sets <html lang> and the fixed texts: data-i18n="key" (text), data-i18n-attr="attr:key;attr:key". */
  function i18n(root) {
    document.documentElement.lang = LANG;
    (root || document).querySelectorAll('[data-i18n]').forEach(function (n) { n.textContent = t(n.getAttribute('data-i18n')); });
    (root || document).querySelectorAll('[data-i18n-attr]').forEach(function (n) {
      n.getAttribute('data-i18n-attr').split(';').forEach(function (pair) {
        var p = pair.split(':');
        if (p.length === 2) n.setAttribute(p[0].trim(), t(p[1].trim()));
      });
    });
  }

  /** createElement with attributes ("class", "text" or plain attributes) and children (nodes or text). */
  function el(tag, attrs) {
    var n = document.createElement(tag);
    if (attrs) Object.keys(attrs).forEach(function (k) {
      var v = attrs[k];
      if (v === null || v === undefined || v === false) return;
      if (k === 'class') n.className = v;
      else if (k === 'text') n.textContent = v;
      else n.setAttribute(k, v === true ? '' : String(v));
    });
    for (var j = 2; j < arguments.length; j++) {
      var c = arguments[j];
      if (c !== null && c !== undefined && c !== false) n.append(c);
    }
    return n;
  }

  function clear(n) { while (n.firstChild) n.removeChild(n.firstChild); return n; }

  // ---- token (sessionStorage only) ----
  var TOKEN_KEY = 'copilot-edge.token';
  function getToken() { try { return sessionStorage.getItem(TOKEN_KEY) || ''; } catch (e) { return ''; } }
  function setToken(v) { try { sessionStorage.setItem(TOKEN_KEY, v); } catch (e) { /* private mode */ } }
  function clearToken() { try { sessionStorage.removeItem(TOKEN_KEY); } catch (e) { /* ignore */ } }

  // ---- API ----
  function fail(kind, status, code, message) { return { kind: kind, status: status || 0, code: code || '', message: message || '' }; }

  /** Why a request failed without an HTTP answer: 'offline' (network gone) or 'restarting' (gateway host
      answers but the agent does not). Asks GET /health quickly. */
  function probe() {
    if (navigator.onLine === false) return Promise.resolve('offline');
    var ctl = new AbortController();
    var timer = setTimeout(function () { ctl.abort(); }, 3000);
    return fetch('/health', { cache: 'no-store', signal: ctl.signal }).then(function (r) {
      return r.ok ? 'up' : 'restarting';
    }, function () {
      return ctl.signal.aborted ? 'offline' : 'restarting';
    }).then(function (v) { clearTimeout(timer); return v; });
  }

  /** JSON request. Resolves with the parsed body; rejects with {kind,status,code,message}, kind one of
      unauthorized | offline | restarting | timeout | http. opts: method, body, token, timeout, probe. */
  async function api(path, opts) {
    opts = opts || {};
    var ctl = new AbortController();
    var timer = setTimeout(function () { ctl.abort(); }, opts.timeout || 20000);
    var headers = { Accept: 'application/json' };
    var tok = opts.token !== undefined ? opts.token : getToken();
    if (tok) headers.Authorization = 'Bearer ' + tok;
    var init = { method: opts.method || 'GET', headers: headers, signal: ctl.signal, cache: 'no-store', credentials: 'same-origin' };
    if (opts.body !== undefined) { headers['Content-Type'] = 'application/json'; init.body = JSON.stringify(opts.body); }
    var res, text;
    try {
      res = await fetch(path, init);
      text = await res.text();
    } catch (e) {
      clearTimeout(timer);
      if (ctl.signal.aborted) throw fail('timeout');
      if (opts.probe === false) throw fail('offline');
      var p = await probe();
      throw fail(p === 'restarting' ? 'restarting' : 'offline');
    }
    clearTimeout(timer);
    var data = null;
    try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
    if (res.ok) return data;
    var er = (data && data.error) || {};
    if (res.status === 401) throw fail('unauthorized', 401, er.code, er.message);
    if (res.status === 502 || res.status === 503 || res.status === 504) {
      var up = opts.probe === false ? 'restarting' : await probe();
      throw fail(up === 'offline' ? 'offline' : 'restarting', res.status, er.code, er.message);
    }
    throw fail('http', res.status, er.code, er.message);
  }

  /** Plain-language text for a failed request. */
  function errText(x) {
    if (!x || !x.kind) return t('httpError', { s: '?' });
    if (x.kind === 'unauthorized') return t('tokenExpired');
    if (x.kind === 'http') return x.message || t('httpError', { s: x.status });
    return t(x.kind);
  }

  // ---- safe Markdown -> DOM ----
  function inline(node, text) {
    var re = /\*\*(.+?)\*\*|`([^`]+)`/g, last = 0, m;
    while ((m = re.exec(text))) {
      if (m.index > last) node.append(text.slice(last, m.index));
      node.append(m[1] !== undefined ? el('strong', { text: m[1] }) : el('code', { text: m[2] }));
      last = re.lastIndex;
    }
    if (last < text.length) node.append(text.slice(last));
    return node;
  }

  /** Renders Markdown (headings, paragraphs, - and 1. lists, **bold**, `code`) as a DocumentFragment.
      All input is treated as text. Headings are shifted two levels (the dialog title is the h2). */
  function md(src) {
    var frag = document.createDocumentFragment();
    var lines = String(src || '').replace(/\r\n?/g, '\n').split('\n');
    if (lines.length && lines[0].trim() === '---') {
      var end = -1;
      for (var k = 1; k < lines.length; k++) if (lines[k].trim() === '---') { end = k; break; }
      if (end > 0) {
        var dl = el('dl', { class: 'fm' });
        lines.slice(1, end).forEach(function (ln) {
          var m = /^\s*([^:]+):\s*(.*)$/.exec(ln);
          if (m && m[2].trim()) dl.append(el('dt', { text: m[1].trim() }), el('dd', { text: m[2].trim() }));
        });
        if (dl.firstChild) frag.append(dl);
        lines = lines.slice(end + 1);
      }
    }
    var para = null, list = null, item = null;
    lines.forEach(function (raw) {
      var line = raw.replace(/\s+$/, ''), m;
      if (!line.trim()) { para = list = item = null; return; }
      if ((m = /^\s{0,3}(#{1,6})\s+(.*)$/.exec(line))) {
        para = list = item = null;
        frag.append(inline(el('h' + Math.min(6, m[1].length + 2)), m[2].replace(/\s+#+$/, '')));
        return;
      }
      if (/^\s{0,3}([-*_])(\s*\1){2,}$/.test(line)) { para = list = item = null; frag.append(el('hr')); return; }
      if ((m = /^\s*(?:([-*+])|(\d{1,9})[.)])\s+(.*)$/.exec(line))) {
        var tag = m[1] ? 'UL' : 'OL';
        if (!list || list.tagName !== tag) {
          para = null;
          list = el(tag.toLowerCase());
          if (tag === 'OL' && m[2] !== '1') list.setAttribute('start', String(parseInt(m[2], 10)));
          frag.append(list);
        }
        item = inline(el('li'), m[3]);
        list.append(item);
        return;
      }
      if (item && /^\s/.test(raw)) { item.append(' '); inline(item, line.trim()); return; }
      list = item = null;
      if (para) { para.append(' '); inline(para, line.trim()); return; }
      para = inline(el('p'), line.trim());
      frag.append(para);
    });
    return frag;
  }

  // ---- formatting ----
  function pad(n) { return (n < 10 ? '0' : '') + n; }
  function num(n, digits) {
    try { return n.toLocaleString(LANG, { minimumFractionDigits: digits, maximumFractionDigits: digits }); } catch (e) { return n.toFixed(digits); }
  }
  /** "07:15" today, otherwise "2026-12-02 07:15"; seconds with sec=true. */
  function time(v, sec) {
    if (!v) return '–';
    var d = v instanceof Date ? v : new Date(v);
    if (isNaN(d)) return '–';
    var s = pad(d.getHours()) + ':' + pad(d.getMinutes()) + (sec ? ':' + pad(d.getSeconds()) : '');
    var now = new Date();
    if (d.toDateString() !== now.toDateString()) s = d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + ' ' + s;
    return s;
  }
  /** Human duration: "42 s", "5 min", "2 h 5 min", "3 d 4 h". */
  function duration(sec) {
    if (sec === null || sec === undefined || isNaN(sec)) return '–';
    sec = Math.max(0, Math.round(Number(sec)));
    var d = Math.floor(sec / 86400), h = Math.floor(sec % 86400 / 3600), m = Math.floor(sec % 3600 / 60), s = sec % 60;
    if (d) return d + ' ' + t('d') + (h ? ' ' + h + ' h' : '');
    if (h) return h + ' h' + (m ? ' ' + m + ' min' : '');
    if (m) return m + ' min' + (s && m < 10 ? ' ' + s + ' s' : '');
    return s + ' s';
  }
  /** Human size: "0 B", "512 B", "12.3 KB", "256.0 MB". */
  function bytes(n) {
    n = Number(n) || 0;
    if (n < 1024) return n + ' B';
    var u = ['KB', 'MB', 'GB', 'TB'], i = -1;
    do { n /= 1024; i++; } while (n >= 1024 && i < u.length - 1);
    return num(n, 1) + ' ' + u[i];
  }

  window.CE = {
    LANG: LANG, t: t, i18n: i18n, el: el, clear: clear, api: api, errText: errText, md: md,
    getToken: getToken, setToken: setToken, clearToken: clearToken,
    time: time, duration: duration, bytes: bytes
  };
})();
