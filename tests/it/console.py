#!/usr/bin/python3
"""End-to-end browser test of the copilot-edge technician console (GET /) and status page (GET /status).

Started by the Rust integration test (tests/it/console.rs), which runs the real agent, a real
Mosquitto broker and the agent's MQTT sink:

    /usr/bin/python3 tests/it/console.py --url http://127.0.0.1:PORT --token TOKEN --token2 TOKEN2 \
        --shots DIR --xss-doc SOP-XSS-001 --xss-equipment xss-1 --xss-question "<text retrieving SOP-XSS-001>"

Protocol on stdout (one line each, flushed):
    ok <check>                 a check passed
    FAIL <check>: <reason>     a check failed; the script exits 1 (screenshot DIR/fail-<check>.png,
                               diagnostics on stderr)
    WAIT <what>                the harness must do <what> (revoke_token2, agent_down, agent_up,
                               broker_down, broker_up) and then write "go\\n" to stdin
    ok all                     everything passed; exit 0
Everything else (notes, warnings, diagnostics) goes to stderr.

Needs Debian's chromium, chromium-driver (/usr/bin/chromedriver) and python3-selenium (4.8).
The contract it tests is docs of the console: element ids, classes and texts (English UI).
"""

import argparse
import os
import re
import secrets
import struct
import sys
import time

from selenium import webdriver
from selenium.common.exceptions import (
    ElementClickInterceptedException,
    ElementNotInteractableException,
    NoAlertPresentException,
    NoSuchElementException,
    StaleElementReferenceException,
    TimeoutException,
    UnexpectedAlertPresentException,
    WebDriverException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

CHROMEDRIVER = "/usr/bin/chromedriver"
RECENT_KEY = "copilot-edge.recent"  # console.js: the recent questions and answers on this device
TOKEN_KEY = "copilot-edge.token"

WAIT_S = 15  # ordinary UI waits
SINK_WAIT_S = 60  # sink state changes on the status page
AGENT_DOWN_WAIT_S = 25  # the console aborts a request itself after 20 s
AGENT_UP_RETRY_S = 20  # keep re-submitting this long after "agent_up"
BACKLOG_GAP_S = 8  # two backlog readings at least this far apart
POLL_S = 0.2
MIN_TARGET_PX = 44
MIN_FONT_PX = 16
PX_TOLERANCE = 0.5  # sub-pixel layout rounding

PUMP_EQUIPMENT = "pump-7"
PUMP_PROBLEM = "pump rattles like gravel and the suction gauge reads low"
PUMP_MARK = "pump rattles like gravel"  # how the pump question is recognised in #recent
OFFICE_EQUIPMENT = "office-1"
OFFICE_PROBLEM = "the water cooler in the office is leaking on the carpet"
CONV_EQUIPMENT = "conv-3"
CONV_PROBLEM = "belt drifts to one side and rubs the frame"
XSS_PROBLEM = 'pump noise <script>window.__xss=1</script><img src=x onerror="window.__xss=2">'
XSS_ECHO = "<img src=x"
RATING_COMMENT = "Strainer basket was half blocked, cleaned it. (e2e test)"

# #state texts that read as an error (the no-SOP refusal must not produce any of these).
ERROR_RE = re.compile(
    r"error|fail|no connection|restarting|not accepted|no longer valid|timed out|timeout|unreachable|went wrong",
    re.I,
)
# What "agent down" must say in #state (contract: no connection / restarting / timeout).
DOWN_RE = re.compile(r"connection|restart|reach|try again|time", re.I)

# Shared JS: visibility as the user sees it (rendered, not visibility:hidden) and a state summary.
JS_LIB = r"""
var E2E = {
  vis: function (e) {
    if (!e || !e.getClientRects().length) return false;
    return getComputedStyle(e).visibility !== 'hidden';
  },
  text: function (sel) {
    var e = document.querySelector(sel);
    return E2E.vis(e) ? (e.innerText || '').replace(/\s+/g, ' ').trim() : '';
  },
  desc: function (e) {
    if (!e) return 'null';
    var d = e.tagName.toLowerCase();
    if (e.id) d += '#' + e.id;
    if (e.tagName === 'INPUT') d += '[type=' + e.type + ']';
    if (typeof e.className === 'string' && e.className.trim())
      d += '.' + e.className.trim().split(/\s+/).join('.');
    if (e.dataset && e.dataset.doc) d += '[data-doc=' + e.dataset.doc + ']';
    var t = (e.textContent || '').replace(/\s+/g, ' ').trim().slice(0, 40);
    if (t && e.tagName !== 'BODY' && e.tagName !== 'FORM' && e.tagName !== 'SECTION') d += ' "' + t + '"';
    return d;
  },
  visibleSteps: function () {
    var ol = document.getElementById('steps');
    if (!E2E.vis(ol)) return [];
    return Array.prototype.filter.call(ol.querySelectorAll(':scope > li'), E2E.vis);
  },
  snapshot: function () {
    var q = function (s) { return document.querySelector(s); };
    var p = window.__e2e || null;
    return {
      signin: E2E.vis(q('#view-signin')), ask: E2E.vis(q('#view-ask')), answer: E2E.vis(q('#answer')),
      steps: E2E.visibleSteps().length, refusal: E2E.vis(q('#refusal')), safety: E2E.vis(q('#safety')),
      doc: E2E.vis(q('#doc')), state: E2E.text('#state'), signinError: E2E.text('#signin-error'),
      mut: p ? p.mut : -1, replaced: p ? p.ans !== q('#answer') : false,
      states: p ? p.states.slice(-4) : [], active: E2E.desc(document.activeElement)
    };
  }
};
"""


class CheckFailed(Exception):
    """A check failed; `where` lists CSS selectors whose text helps to understand why."""

    def __init__(self, reason, where=None):
        super().__init__(reason)
        self.where = where


def one_line(s, limit=900):
    s = re.sub(r"\s+", " ", str(s)).strip()
    return s if len(s) <= limit else s[: limit - 1] + "…"


def norm(s):
    return re.sub(r"\s+", " ", s or "").strip()


def parse_count(text):
    """'1 234' / '1,234' / '17' -> int; anything else -> None."""
    t = (text or "").strip()
    if not re.fullmatch(r"\d[\d\s,.'\u00a0\u202f]*", t):
        return None
    return int(re.sub(r"\D", "", t))


def png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    if head[:8] != b"\x89PNG\r\n\x1a\n":
        raise CheckFailed(f"{path} is not a PNG")
    return struct.unpack(">II", head[16:24])


def warn(msg):
    print(f"WARN {one_line(msg, 2000)}", file=sys.stderr, flush=True)


def note(msg):
    print(f"note: {one_line(msg, 2000)}", file=sys.stderr, flush=True)


class ConsoleE2E:
    def __init__(self, args, driver):
        self.a = args
        self.d = driver
        self.url = args.url.rstrip("/")
        self.shots = args.shots
        self.pump_steps = None  # step texts of the first pump-7 answer, for the #recent check
        self.focus_log = []  # (element, outline-style, box-shadow) for every element reached by TAB
        self.logs = []  # browser console entries

    # ------------------------------------------------------------------ low-level helpers

    def js(self, body, *args):
        return self.d.execute_script(JS_LIB + body, *args)

    def snap(self):
        try:
            return self.js("return E2E.snapshot();")
        except WebDriverException as e:
            return {"snapshot_error": one_line(e.msg if hasattr(e, "msg") else e, 200)}

    def shown(self, sel):
        try:
            els = self.d.find_elements(By.CSS_SELECTOR, sel)
            return bool(els) and els[0].is_displayed()
        except StaleElementReferenceException:
            return False

    def el(self, sel, where=None):
        els = self.d.find_elements(By.CSS_SELECTOR, sel)
        if not els:
            raise CheckFailed(f"no element matches {sel}", where)
        return els[0]

    def text(self, sel):
        """Visible text of the first match ('' when hidden or missing)."""
        return self.js("return E2E.text(arguments[0]);", sel)

    def wait(self, desc, cond, timeout=WAIT_S, seen=None, where=None):
        """Wait until cond() is truthy; on timeout fail with what was seen."""
        try:
            return WebDriverWait(
                self.d,
                timeout,
                poll_frequency=POLL_S,
                ignored_exceptions=(StaleElementReferenceException, NoSuchElementException),
            ).until(lambda _d: cond())
        except TimeoutException:
            observed = seen() if seen else self.snap()
            raise CheckFailed(f"timed out after {timeout:g} s waiting for {desc}; seen: {observed}", where)

    def wait_shown(self, sel, timeout=WAIT_S, where=None):
        self.wait(f"{sel} to be visible", lambda: self.shown(sel), timeout, where=where)
        return self.el(sel)

    def wait_hidden(self, sel, timeout=WAIT_S, where=None):
        self.wait(f"{sel} to be hidden", lambda: not self.shown(sel), timeout, where=where)

    def click(self, target, desc=None):
        """Click an element (selector or WebElement) once it is visible and enabled."""
        desc = desc or (target if isinstance(target, str) else "element")

        def attempt():
            e = self.el(target) if isinstance(target, str) else target
            if not (e.is_displayed() and e.is_enabled()):
                return False
            self.d.execute_script("arguments[0].scrollIntoView({block: 'center', inline: 'nearest'});", e)
            try:
                e.click()
            except (ElementClickInterceptedException, ElementNotInteractableException):
                return False
            return True

        def seen():
            try:
                e = self.el(target) if isinstance(target, str) else target
                return f"displayed={e.is_displayed()} enabled={e.is_enabled()} {self.snap()}"
            except (CheckFailed, WebDriverException) as ex:
                return f"{ex}"

        self.wait(f"{desc} to be clickable", attempt, seen=seen)

    def set_field(self, sel, value):
        e = self.wait_shown(sel)
        e.clear()
        e.send_keys(value)
        got = e.get_property("value")
        if got != value:
            raise CheckFailed(f"{sel} holds {got!r} after typing {value!r}")

    def settle(self):
        """Wait for two animation frames (layout and paint after a resize or scroll)."""
        self.d.execute_async_script(
            "var cb = arguments[arguments.length - 1];"
            "requestAnimationFrame(function () { requestAnimationFrame(function () { cb(true); }); });"
        )

    def set_viewport(self, w, h, exact=False):
        """Size the window so that the inner viewport is w x h (one correction step)."""
        self.d.set_window_size(w, h)
        iw, ih = self.d.execute_script("return [window.innerWidth, window.innerHeight];")
        if (iw, ih) != (w, h):
            self.d.set_window_size(w + (w - iw), h + (h - ih))
            iw, ih = self.d.execute_script("return [window.innerWidth, window.innerHeight];")
        if exact and (iw, ih) != (w, h):
            raise CheckFailed(f"could not size the viewport to {w}x{h}: got {iw}x{ih}")
        self.settle()
        return iw, ih

    def keys(self, *keys):
        ActionChains(self.d).send_keys(*keys).perform()

    def shift_tab(self):
        ActionChains(self.d).key_down(Keys.SHIFT).send_keys(Keys.TAB).key_up(Keys.SHIFT).perform()

    def select_all(self):
        ActionChains(self.d).key_down(Keys.CONTROL).send_keys("a").key_up(Keys.CONTROL).perform()

    def harness(self, what):
        print(f"WAIT {what}", flush=True)
        line = sys.stdin.readline()
        if not line:
            raise CheckFailed(f"stdin closed while waiting for the harness to do {what}")
        if line.strip() != "go":
            raise CheckFailed(f"harness answered {line.strip()!r} instead of 'go' for {what}")

    def check_no_alert(self):
        try:
            alert = self.d.switch_to.alert
        except NoAlertPresentException:
            return
        txt = alert.text
        alert.dismiss()
        raise CheckFailed(f"a JavaScript alert is open ({txt!r}): injected script ran")

    def collect_logs(self):
        try:
            self.logs.extend(self.d.get_log("browser"))
        except Exception:  # logging capability missing: not essential
            pass

    def fetch_json(self, path):
        """GET an API path from inside the page with the main token."""
        return self.d.execute_async_script(
            "var cb = arguments[arguments.length - 1];"
            "fetch(arguments[0], {headers: {Authorization: 'Bearer ' + arguments[1]}})"
            ".then(function (r) { return r.text().then(function (t) {"
            "  var j = null; try { j = JSON.parse(t); } catch (e) {}"
            "  cb({status: r.status, body: j, raw: t.slice(0, 300)}); }); })"
            ".catch(function (e) { cb({status: 0, error: String(e)}); });",
            self.url + path,
            self.a.token,
        )

    # ------------------------------------------------------------------ console helpers

    def sign_in(self, token):
        self.wait_shown("#view-signin")
        self.set_field("#token", token)
        self.click("#signin-btn")

        def done():
            s = self.snap()
            if s.get("ask") and not s.get("signin"):
                return True
            if s.get("signinError"):
                raise CheckFailed(f"sign-in refused: #signin-error says {s['signinError']!r}", ["#view-signin"])
            return False

        self.wait("#view-ask after signing in", done)

    def install_probe(self):
        """Record mutations of #answer and the texts #state goes through, from now on."""
        self.d.execute_script(
            """
            var a = document.getElementById('answer'), st = document.getElementById('state');
            if (window.__e2e) { window.__e2e.obs.forEach(function (o) { o.disconnect(); }); }
            var p = window.__e2e = {mut: 0, states: [], ans: a, obs: []};
            if (a) {
              var o1 = new MutationObserver(function (ms) { p.mut += ms.length; });
              o1.observe(a, {childList: true, subtree: true, characterData: true});
              p.obs.push(o1);
            }
            if (st) {
              var o2 = new MutationObserver(function () { p.states.push((st.textContent || '').trim()); });
              o2.observe(st, {childList: true, subtree: true, characterData: true});
              p.obs.push(o2);
            }
            """
        )

    @staticmethod
    def answer_ready(s):
        return (
            (s.get("mut", 0) > 0 or s.get("replaced"))
            and s.get("answer")
            and (s.get("steps", 0) >= 1 or s.get("refusal"))
            and "asking" not in (s.get("state") or "").lower()
        )

    def submit_question(self, equipment, problem):
        self.wait_shown("#view-ask")
        self.set_field("#equipment", equipment)
        self.set_field("#problem", problem)
        self.install_probe()
        self.click("#ask-btn")

    def wait_answer(self, timeout=WAIT_S):
        def cond():
            s = self.snap()
            if s.get("signin"):
                raise CheckFailed(f"sent back to sign-in while asking: {s}", ["#view-signin", "#state"])
            return self.answer_ready(s)

        self.wait("a new answer in #answer", cond, timeout)
        return self.snap()

    def ask(self, equipment, problem, timeout=WAIT_S):
        self.submit_question(equipment, problem)
        return self.wait_answer(timeout)

    def ask_outcome(self, timeout):
        """After submit_question: ('answer', snap) or ('message', #state text) once either settles."""
        deadline = time.monotonic() + timeout
        msg_since = None
        while True:
            s = self.snap()
            if s.get("signin"):
                raise CheckFailed(f"sent back to sign-in (token dropped?): {s}", ["#view-signin", "#state"])
            if self.answer_ready(s):
                return "answer", s
            st = s.get("state") or ""
            if st and "asking" not in st.lower():
                # the message must stay for a moment (not a transient text before the answer renders)
                msg_since = msg_since or time.monotonic()
                if time.monotonic() - msg_since >= 0.5:
                    return "message", st
            else:
                msg_since = None
            if time.monotonic() >= deadline:
                return "timeout", s
            time.sleep(POLL_S)

    def step_texts(self):
        return self.js("return E2E.visibleSteps().map(function (li) { return (li.textContent || '').replace(/\\s+/g, ' ').trim(); });")

    def open_doc_by_button(self, button, desc):
        self.click(button, desc)
        self.wait_shown("#doc", where=["#doc"])

    def close_doc(self):
        self.click("#doc-close")
        self.wait_hidden("#doc", where=["#doc"])

    def tab_to(self, css, desc=None, limit=40):
        """Press TAB (or Shift+TAB when the target comes earlier) until the focused element matches css."""
        desc = desc or css
        probe = """
            var a = document.activeElement, s = getComputedStyle(a);
            var t = Array.prototype.filter.call(document.querySelectorAll(arguments[0]), E2E.vis)[0] || null;
            var dir = 0;
            if (t && a && a !== t && a !== document.body) {
              var pos = a.compareDocumentPosition(t);
              dir = (pos & Node.DOCUMENT_POSITION_PRECEDING) ? -1 : 1;
            } else if (t) { dir = 1; }
            return {match: !!(a && a.matches && a.matches(arguments[0])), desc: E2E.desc(a),
                    outline: s.outlineStyle, shadow: s.boxShadow, body: a === document.body, dir: dir, target: !!t};
        """
        st = self.js(probe, css)
        if st["match"]:  # already focused (autofocus or focus moved by the page)
            self.focus_log.append((st["desc"], st["outline"], st["shadow"]))
            return st
        if not st["target"]:
            raise CheckFailed(f"no visible element matches {css} to tab to; focus is on {st['desc']}")
        backwards = st["dir"] < 0
        path = [st["desc"]]
        for _ in range(limit):
            if backwards:
                self.shift_tab()
            else:
                self.keys(Keys.TAB)
            st = self.js(probe, css)
            path.append(st["desc"])
            if not st["body"]:
                self.focus_log.append((st["desc"], st["outline"], st["shadow"]))
            if st["match"]:
                return st
        raise CheckFailed(
            f"{'Shift+' if backwards else ''}TAB x{limit} never focused {desc}; focus went: " + " -> ".join(path[:25])
        )

    def active(self):
        return self.js("return E2E.desc(document.activeElement);")

    # ------------------------------------------------------------------ checks

    def check_languages(self):
        """Labels follow the browser's language: English, German, Spanish."""
        self.d.get(self.url + "/")
        self.wait_shown("#signin-btn")
        seen = {"en": (self.d.execute_script("return document.documentElement.lang;"),
                       self.text("#signin-btn"), self.text("label[for=token]"))}
        for code, accept in (("de", "de-DE,de"), ("es", "es-ES,es")):
            d = make_driver(accept)
            try:
                d.get(self.url + "/")
                WebDriverWait(d, WAIT_S).until(
                    lambda drv: drv.find_element(By.CSS_SELECTOR, "#signin-btn").is_displayed())
                seen[code] = (d.execute_script("return document.documentElement.lang;"),
                              d.find_element(By.CSS_SELECTOR, "#signin-btn").text.strip(),
                              d.find_element(By.CSS_SELECTOR, "label[for=token]").text.strip())
            finally:
                d.quit()
        for code, (lang, button, label) in seen.items():
            if not lang.startswith(code) or not button or not label:
                raise CheckFailed(f"{code}: html lang {lang!r}, button {button!r}, label {label!r}")
        if len({v[1] for v in seen.values()}) != 3 or len({v[2] for v in seen.values()}) != 3:
            raise CheckFailed(f"labels not translated: {seen}")
        note(f"languages: {seen}")

    def check_wrong_token(self):
        self.d.get(self.url + "/")
        self.wait_shown("#view-signin")
        self.wait_shown("#token")
        if self.shown("#view-ask"):
            raise CheckFailed("#view-ask is visible before signing in")
        self.set_field("#token", "wrong-" + secrets.token_hex(12))
        self.click("#signin-btn")
        self.wait("#signin-error visible with text", lambda: self.text("#signin-error") != "", where=["#view-signin"])
        if self.shown("#view-ask"):
            raise CheckFailed("#view-ask became visible with a wrong token")
        stored = self.d.execute_script("return sessionStorage.getItem(arguments[0]);", TOKEN_KEY)
        if stored:
            raise CheckFailed(f"a refused token was stored in sessionStorage[{TOKEN_KEY}]")
        note(f"wrong token message: {self.text('#signin-error')!r}")

    def check_sign_in(self):
        self.sign_in(self.a.token)
        plant = self.wait("#plant prefilled", lambda: self.el("#plant").get_property("value"))
        opts = lambda: self.d.execute_script(
            "return Array.prototype.map.call(document.querySelectorAll('#equipment-list option'),"
            " function (o) { return o.value; });"
        )
        self.wait(f"#equipment-list to offer {PUMP_EQUIPMENT}", lambda: PUMP_EQUIPMENT in opts(),
                  seen=lambda: f"options {opts()[:40]}")
        st = self.d.execute_script(
            "var ls = [];"
            "for (var i = 0; i < localStorage.length; i++) { var k = localStorage.key(i);"
            "  ls.push(k + '=' + localStorage.getItem(k)); }"
            "return {ss: sessionStorage.getItem(arguments[0]), ls: ls.join('\\n'), href: location.href};",
            TOKEN_KEY,
        )
        if st["ss"] != self.a.token:
            raise CheckFailed(f"token not kept in sessionStorage[{TOKEN_KEY}] (found {st['ss']!r})")
        if self.a.token in st["ls"]:
            raise CheckFailed("the token was written to localStorage")
        if self.a.token in st["href"]:
            raise CheckFailed("the token appears in the page URL")
        note(f"plant prefilled with {plant!r}; {len(opts())} equipment options")

    def check_ask_answer(self):
        self.ask(PUMP_EQUIPMENT, PUMP_PROBLEM)
        info = self.js(
            """
            var sf = document.getElementById('safety'), ol = document.getElementById('steps');
            var res = {safety: E2E.vis(sf), safetyLi: sf ? sf.querySelectorAll('li').length : 0,
                       stepsVisible: E2E.vis(ol), order: null, safetyTop: null, stepsTop: null, steps: []};
            if (sf && ol) {
              res.order = !!(sf.compareDocumentPosition(ol) & Node.DOCUMENT_POSITION_FOLLOWING);
              res.safetyTop = sf.getBoundingClientRect().top; res.stepsTop = ol.getBoundingClientRect().top;
            }
            res.steps = E2E.visibleSteps().map(function (li) {
              return {checkbox: !!li.querySelector('input[type=checkbox]'),
                      cites: Array.prototype.map.call(li.querySelectorAll('button.cite'),
                                                      function (b) { return b.getAttribute('data-doc') || ''; }),
                      text: (li.textContent || '').replace(/\s+/g, ' ').trim()};
            });
            return res;
            """
        )
        where = ["#answer"]
        if not info["safety"] or info["safetyLi"] < 1:
            raise CheckFailed(f"#safety not visible with at least one li: {info}", where)
        if info["order"] is not True:
            raise CheckFailed("#safety does not come before ol#steps in document order", where)
        if not (info["safetyTop"] < info["stepsTop"]):
            raise CheckFailed(f"#safety (top {info['safetyTop']}) is not above ol#steps (top {info['stepsTop']})", where)
        steps = info["steps"]
        if len(steps) < 3:
            raise CheckFailed(f"ol#steps has {len(steps)} visible li, expected >= 3", where)
        for i, st in enumerate(steps, 1):
            if not st["checkbox"]:
                raise CheckFailed(f"step {i} has no checkbox: {st['text']!r}", where)
            if not any(c.startswith("SOP-") for c in st["cites"]):
                raise CheckFailed(f"step {i} has no button.cite with data-doc 'SOP-…' (found {st['cites']}): {st['text']!r}", where)
        conf = self.text("#confidence")
        if not conf or not re.search(r"\d", conf):
            raise CheckFailed(f"#confidence should show a number, shows {conf!r}", ["#confidence"])
        author = self.text("#author")
        if not author:
            raise CheckFailed("#author is empty or hidden", ["#author"])
        if self.shown("#refusal"):
            raise CheckFailed(f"#refusal is visible for a supported answer: {self.text('#refusal')!r}", ["#refusal"])
        self.pump_steps = [s["text"] for s in steps]
        note(f"{len(steps)} steps, {info['safetyLi']} safety notes, {conf!r}, {author!r}")

    def check_open_sop(self):
        cite = self.wait("a visible button.cite",
                         lambda: next((b for b in self.d.find_elements(By.CSS_SELECTOR, "#steps button.cite")
                                       if b.is_displayed()), None))
        doc_id = cite.get_attribute("data-doc")
        api = self.fetch_json("/v1/documents/" + doc_id)
        api_title = (api.get("body") or {}).get("title") if api.get("status") == 200 else None
        if api_title is None:
            warn(f"GET /v1/documents/{doc_id} gave {api}; comparing #doc-title only for non-emptiness")
        self.open_doc_by_button(cite, f"button.cite[data-doc={doc_id}]")
        where = ["#doc"]
        if api_title:
            want = norm(api_title)
            self.wait(f"#doc-title to show {want!r}",
                      lambda: want in norm(self.text("#doc-title")),
                      seen=lambda: f"#doc-title {self.text('#doc-title')!r}", where=where)
            if norm(self.text("#doc-title")) != want:
                note(f"#doc-title {self.text('#doc-title')!r} contains but does not equal the API title {want!r}")
        else:
            self.wait("#doc-title text", lambda: self.text("#doc-title") != "", where=where)
        self.wait("#doc-body to contain a list item",
                  lambda: self.js("var b = document.getElementById('doc-body'); return !!b && b.querySelectorAll('li').length > 0;"),
                  seen=lambda: f"#doc-body text {self.text('#doc-body')[:300]!r}", where=where)
        self.close_doc()

    def check_rate(self):
        where = ["#rating"]
        self.wait_shown("#rating", where=where)
        self.click('button.star[data-score="4"]')
        pressed = self.el('button.star[data-score="4"]').get_attribute("aria-pressed")
        if pressed != "true":
            warn(f"star 4 has aria-pressed={pressed!r} after clicking it (contract: aria-pressed)")
        self.set_field("#comment", RATING_COMMENT)
        self.click("#rate-btn")
        self.wait("#rate-result to say 'recorded'", lambda: "recorded" in self.text("#rate-result").lower(),
                  seen=lambda: f"#rate-result {self.text('#rate-result')!r}", where=where)
        first = self.text("#rate-result")
        self.click('button.star[data-score="5"]')
        btn = self.el("#rate-btn")
        if not (btn.is_displayed() and btn.is_enabled()):
            raise CheckFailed("#rate-btn is hidden or disabled after one rating; a second rating cannot be sent "
                              "(the server's 409 'already_rated' must be shown)", where)
        self.click("#rate-btn")
        self.wait("#rate-result to say 'already'", lambda: "already" in self.text("#rate-result").lower(),
                  seen=lambda: f"#rate-result {self.text('#rate-result')!r}", where=where)
        note(f"rating messages: {first!r} then {self.text('#rate-result')!r}")

    def check_no_sop(self):
        self.ask(OFFICE_EQUIPMENT, OFFICE_PROBLEM)
        where = ["#answer", "#state"]
        if not self.shown("#refusal"):
            raise CheckFailed("#refusal is not visible for an out-of-scope question", where)
        refusal = self.text("#refusal")
        if "escalate" not in refusal.lower():
            raise CheckFailed(f"#refusal does not mention 'escalate': {refusal!r}", where)
        n = len(self.step_texts())
        if n:
            raise CheckFailed(f"ol#steps shows {n} steps for a refused answer", where)
        alert_role = self.d.execute_script(
            "var r = document.getElementById('refusal');"
            "return r.getAttribute('role') === 'alert' || !!r.querySelector('[role=alert]') ||"
            " !!(r.closest('[role=alert]'));"
        )
        if alert_role:
            raise CheckFailed("#refusal (or its container/content) has role=alert: a refusal is an answer, not an error", where)
        state = self.text("#state")
        if state and ERROR_RE.search(state):
            raise CheckFailed(f"#state shows an error for a refusal: {state!r}", where)
        note(f"refusal: {refusal[:200]!r}")

    def check_xss(self):
        # (a) markup in the question is echoed as text
        self.ask(PUMP_EQUIPMENT, XSS_PROBLEM)
        self.check_no_alert()
        where = ["#answer", "#recent"]
        if self.d.execute_script("return typeof window.__xss;") != "undefined":
            raise CheckFailed(f"window.__xss = {self.d.execute_script('return window.__xss;')!r}: the question was executed", where)
        bad = self.d.execute_script(
            "var n = [];"
            "['#answer', '#recent'].forEach(function (s) { var r = document.querySelector(s);"
            "  if (r) r.querySelectorAll('script, img').forEach(function (e) { n.push(s + ' ' + e.outerHTML.slice(0, 80)); }); });"
            "document.querySelectorAll('img[src=\"x\"]').forEach(function (e) { n.push('page ' + e.outerHTML.slice(0, 80)); });"
            "return n;"
        )
        if bad:
            raise CheckFailed(f"injected elements exist: {bad}", where)

        def echoed_where():
            return self.d.execute_script(
                "var needle = arguments[0], out = [];"
                "['#recent', '#report'].forEach(function (s) { var r = document.querySelector(s);"
                "  if (r && (r.textContent || '').indexOf(needle) >= 0) out.push(s + ' text'); });"
                "document.querySelectorAll('#recent [title], #recent [aria-label]').forEach(function (e) {"
                "  if (((e.getAttribute('title') || '') + ' ' + (e.getAttribute('aria-label') || '')).indexOf(needle) >= 0)"
                "    out.push('#recent title/aria-label'); });"
                "return out;",
                XSS_ECHO,
            )

        found = self.wait(f"the literal text {XSS_ECHO!r} in #recent or #report", echoed_where,
                          seen=lambda: f"#recent {self.text('#recent')[:300]!r}", where=where)
        note(f"question echoed literally in {found}")

        # (b) markup inside a SOP is shown as text in the document view
        self.ask(self.a.xss_equipment, self.a.xss_question)
        self.check_no_alert()
        doc = self.a.xss_doc
        btn = self.wait(
            f"a button.cite for {doc}",
            lambda: next((b for b in self.d.find_elements(By.CSS_SELECTOR, "button.cite")
                          if b.get_attribute("data-doc") == doc and b.is_displayed()), None),
            seen=lambda: "citations " + str([b.get_attribute("data-doc") for b in self.d.find_elements(By.CSS_SELECTOR, "button.cite")]),
            where=["#answer"],
        )
        self.open_doc_by_button(btn, f"button.cite[data-doc={doc}]")
        self.check_no_alert()
        where = ["#doc"]
        lit = lambda s: "<script>" in s or "onerror=" in s
        self.wait("#doc-title to show '<script>' or 'onerror=' literally", lambda: lit(self.text("#doc-title")),
                  seen=lambda: f"#doc-title {self.text('#doc-title')!r}", where=where)
        self.wait("#doc-body to show '<script>' or 'onerror=' literally", lambda: lit(self.text("#doc-body")),
                  seen=lambda: f"#doc-body {self.text('#doc-body')[:400]!r}", where=where)
        bad = self.d.execute_script(
            "var n = [];"
            "['#doc-title', '#doc-body'].forEach(function (s) { var r = document.querySelector(s);"
            "  if (r) r.querySelectorAll('script, img, iframe').forEach(function (e) { n.push(s + ' ' + e.outerHTML.slice(0, 80)); }); });"
            "return n;"
        )
        if bad:
            raise CheckFailed(f"SOP markup became elements: {bad}", where)
        self.check_no_alert()
        if self.d.execute_script("return typeof window.__xss;") != "undefined":
            raise CheckFailed(f"window.__xss = {self.d.execute_script('return window.__xss;')!r} after opening {doc}", where)
        self.close_doc()
        self.check_no_alert()

    def check_recent(self):
        where = ["#recent", "#answer"]
        items = lambda: self.d.execute_script(
            "return Array.prototype.filter.call(document.querySelectorAll('#recent button.recent-item'),"
            " function (b) { return b.getClientRects().length > 0; }).map(function (b) {"
            " return (b.textContent || '') + ' ' + (b.getAttribute('title') || '') + ' ' + (b.getAttribute('aria-label') || ''); });"
        )
        self.wait("#recent to list >= 2 button.recent-item", lambda: len(items()) >= 2,
                  seen=lambda: f"items {items()}", where=where)
        texts = items()
        idx = next((i for i, t in enumerate(texts) if PUMP_MARK in t), None)
        if idx is None:
            raise CheckFailed(f"no recent item mentions {PUMP_MARK!r}: {[one_line(t, 80) for t in texts]}", where)
        buttons = [b for b in self.d.find_elements(By.CSS_SELECTOR, "#recent button.recent-item") if b.is_displayed()]
        self.click(buttons[idx], "the pump-7 recent item")
        want = self.pump_steps or []
        self.wait("#answer to show the pump-7 steps again", lambda: want and self.step_texts() == want,
                  seen=lambda: f"steps now {self.step_texts()[:3]}… want {want[:3]}…", where=where)

    def check_keyboard(self):
        self.set_viewport(768, 1024)
        self.d.execute_script("sessionStorage.clear();")
        self.d.refresh()
        self.wait_shown("#view-signin")
        self.wait_shown("#token")
        self.focus_log = []

        self.tab_to("#token")
        self.select_all()
        self.keys(self.a.token)
        self.keys(Keys.ENTER)
        self.wait("#view-ask after signing in with the keyboard", lambda: self.shown("#view-ask") and not self.shown("#view-signin"),
                  where=["#view-signin"])

        self.tab_to("#equipment")
        self.select_all()
        self.keys(CONV_EQUIPMENT)
        self.tab_to("#problem")
        self.select_all()
        self.keys(CONV_PROBLEM)
        vals = self.d.execute_script("return [document.getElementById('equipment').value, document.getElementById('problem').value];")
        if vals != [CONV_EQUIPMENT, CONV_PROBLEM]:
            raise CheckFailed(f"typed values did not land: #equipment/#problem = {vals}")
        self.tab_to("#ask-btn")
        self.install_probe()
        self.keys(Keys.ENTER)
        s = self.wait_answer()
        if s.get("steps", 0) < 1:
            raise CheckFailed(f"the {CONV_EQUIPMENT} question got no steps (needs a cited SOP): {s}", ["#answer"])

        self.tab_to("button.cite", "a button.cite")
        self.keys(Keys.ENTER)
        self.wait_shown("#doc", where=["#doc"])
        self.wait("focus inside #doc",
                  lambda: self.d.execute_script("var d = document.getElementById('doc'); return d.contains(document.activeElement);"),
                  seen=lambda: f"focus on {self.active()}", where=["#doc"])
        self.keys(Keys.ESCAPE)
        self.wait_hidden("#doc", where=["#doc"])
        back = self.d.execute_script("return document.activeElement.matches('button.cite');")
        if not back:
            warn(f"after Escape focus is on {self.active()}, not back on the citation (contract)")

        lacking = list(dict.fromkeys(f"{d} (outline-style {o}, box-shadow {sh})"
                                     for d, o, sh in self.focus_log if o == "none" and sh == "none"))
        if lacking:
            raise CheckFailed("focused elements without a visible focus style: " + "; ".join(lacking))
        names = " ".join(d for d, _, _ in self.focus_log)
        if "#token" not in names or "#ask-btn" not in names:
            raise CheckFailed(f"focus style not checked on both #token and #ask-btn: {names}")
        note(f"{len(self.focus_log)} keyboard focus stops, all with a visible focus style")

    def check_touch_targets(self):
        self.set_viewport(390, 844)
        if not self.shown("#answer"):
            warn("#answer not visible at 390x844; only the form is measured")
        res = self.js(
            """
            var roots = ['#view-ask', '#answer'].map(function (s) { return document.querySelector(s); }).filter(Boolean);
            var seen = new Set(), bad = [], tiny = [], checked = 0, min = arguments[0], tol = arguments[1];
            roots.forEach(function (root) {
              root.querySelectorAll('button, input, textarea, select').forEach(function (e) {
                if (seen.has(e)) return; seen.add(e);
                if (e.tagName === 'INPUT' && e.type === 'hidden') return;
                var box = e.tagName === 'INPUT' && (e.type === 'checkbox' || e.type === 'radio');
                var t = box ? (e.closest('label') || e) : e;
                if (!E2E.vis(t)) return;
                var r = t.getBoundingClientRect();
                if (r.width <= 1 || r.height <= 1) { tiny.push(E2E.desc(e)); return; }
                checked++;
                var needW = box || e.tagName === 'BUTTON' ||
                            (e.tagName === 'INPUT' && /^(submit|button|reset|image)$/.test(e.type));
                if (r.height < min - tol || (needW && r.width < min - tol))
                  bad.push((box ? 'label of ' : '') + E2E.desc(e) + ' is ' + r.width.toFixed(1) + 'x' + r.height.toFixed(1));
              });
            });
            var fs = function (e) { return parseFloat(getComputedStyle(e).fontSize); };
            return {bad: bad, tiny: tiny, checked: checked, html: fs(document.documentElement), body: fs(document.body),
                    overflow: document.documentElement.scrollWidth - window.innerWidth};
            """,
            MIN_TARGET_PX,
            PX_TOLERANCE,
        )
        if res["tiny"]:
            note(f"skipped visually-hidden controls: {res['tiny']}")
        if res["overflow"] > 1:
            warn(f"page is {res['overflow']} px wider than the 390 px viewport (horizontal scrolling)")
        problems = []
        if res["bad"]:
            problems.append(f"targets smaller than {MIN_TARGET_PX} px: " + "; ".join(res["bad"]))
        if res["html"] < MIN_FONT_PX or res["body"] < MIN_FONT_PX:
            problems.append(f"font-size html {res['html']} px / body {res['body']} px, want >= {MIN_FONT_PX}")
        if res["checked"] == 0:
            problems.append("no visible controls found in #view-ask / #answer")
        if problems:
            raise CheckFailed(" | ".join(problems))
        note(f"{res['checked']} controls >= {MIN_TARGET_PX} px; font-size html {res['html']} px, body {res['body']} px")

    def shot(self, name, w, h, anchor=None):
        self.set_viewport(w, h, exact=True)
        if anchor:
            # Start the picture at the answer (a phone shows little more than the form else).
            self.d.execute_script(
                "const e = document.querySelector(arguments[0]);"
                "window.scrollTo(0, e.getBoundingClientRect().top + window.scrollY - 8);", anchor)
        else:
            self.d.execute_script("window.scrollTo(0, 0);")
        self.settle()
        path = os.path.join(self.shots, name)
        if not self.d.get_screenshot_as_file(path):
            raise CheckFailed(f"could not write {path}")
        dpr = self.d.execute_script("return window.devicePixelRatio;") or 1
        got = png_size(path)
        want = (round(w * dpr), round(h * dpr))
        if got != want:
            raise CheckFailed(f"{path} is {got[0]}x{got[1]}, expected {want[0]}x{want[1]}")
        return path

    def check_screenshots(self):
        self.set_viewport(768, 1024, exact=True)
        self.ask(PUMP_EQUIPMENT, PUMP_PROBLEM)
        for name, (w, h), anchor in (("console-tablet.png", (768, 1024), None),
                                     ("console-phone.png", (390, 844), "#answer")):
            self.set_viewport(w, h, exact=True)
            if not (self.shown("#safety") and self.shown("#steps") and len(self.step_texts()) >= 1):
                raise CheckFailed(f"safety and steps not both visible at {w}x{h}: {self.snap()}", ["#answer"])
            note(f"wrote {self.shot(name, w, h, anchor)}")

    def check_revoked(self):
        self.set_viewport(1024, 768)
        self.click("#signout-btn")
        self.wait_shown("#view-signin", where=["#view-signin"])
        if self.d.execute_script("return sessionStorage.getItem(arguments[0]);", TOKEN_KEY):
            warn("sessionStorage still holds a token after signing out")
        # A shared tablet: the recent questions and answers leave with the technician.
        left = self.d.execute_script("return localStorage.getItem(arguments[0]);", RECENT_KEY)
        if left:
            raise CheckFailed(f"localStorage still holds the recent answers after signing out: {left[:120]!r}",
                              ["#recent"])
        self.sign_in(self.a.token2)
        self.harness("revoke_token2")
        self.submit_question(PUMP_EQUIPMENT, PUMP_PROBLEM)

        def back_to_signin():
            s = self.snap()
            return s.get("signin") and not s.get("ask") and s.get("signinError")

        self.wait("#view-signin with #signin-error after the token was revoked", back_to_signin,
                  where=["#view-signin", "#state"])
        note(f"revoked-token message: {self.text('#signin-error')!r}")
        if self.d.execute_script("return sessionStorage.getItem(arguments[0]);", TOKEN_KEY) == self.a.token2:
            warn("the revoked token is still in sessionStorage")
        self.sign_in(self.a.token)

    def check_agent_down(self):
        self.harness("agent_down")
        self.submit_question(PUMP_EQUIPMENT, PUMP_PROBLEM)
        kind, what = self.ask_outcome(AGENT_DOWN_WAIT_S)
        if kind == "answer":
            raise CheckFailed("an answer appeared although the agent is down", ["#answer"])
        if kind == "timeout":
            raise CheckFailed(f"#state showed no message within {AGENT_DOWN_WAIT_S} s of asking a stopped agent: {what}", ["#state"])
        if not DOWN_RE.search(what):
            raise CheckFailed(f"#state message does not talk about the connection/restart: {what!r}", ["#state"])
        st = self.d.execute_script("return sessionStorage.getItem(arguments[0]);", TOKEN_KEY)
        if not self.shown("#view-ask") or self.shown("#view-signin"):
            raise CheckFailed(f"the console left #view-ask while the agent was down: {self.snap()}", ["#view-signin"])
        if st != self.a.token:
            raise CheckFailed("the token was dropped from sessionStorage while the agent was down")
        note(f"agent down message: {what!r}")

        self.harness("agent_up")
        deadline = time.monotonic() + AGENT_UP_RETRY_S
        attempts = []
        while True:
            self.submit_question(PUMP_EQUIPMENT, PUMP_PROBLEM)
            kind, what = self.ask_outcome(WAIT_S)
            if kind == "answer":
                break
            attempts.append(one_line(what, 120))
            if time.monotonic() >= deadline:
                raise CheckFailed(f"no answer within {AGENT_UP_RETRY_S} s after agent_up; attempts saw: {attempts}",
                                  ["#state", "#answer"])
            time.sleep(1.0)  # polling interval between re-submits
        if len(self.step_texts()) < 1:
            raise CheckFailed("the answer after the restart has no steps", ["#answer"])
        note(f"answer after restart ({len(attempts)} failed attempts first)")

    def sink_row(self):
        return self.d.execute_script(
            "var r = document.querySelector('tr[data-sink=\"mqtt\"]');"
            "if (!r) return null;"
            "var t = function (c) { var e = r.querySelector(c); return e ? (e.textContent || '').trim() : null; };"
            "var se = document.getElementById('status-error');"
            "return {link: t('.link'), backlog: t('.backlog-records'), bytes: t('.backlog-bytes'),"
            " lastError: t('.last-error'), statusError: se && se.getClientRects().length ? se.textContent.trim() : ''};"
        )

    def check_status_offline(self):
        self.harness("broker_down")
        self.set_viewport(1024, 768, exact=True)
        self.d.get(self.url + "/status")
        where = ["#sinks", "#status-error"]
        self.wait('tr[data-sink="mqtt"] in #sinks', lambda: self.sink_row() is not None, where=where)
        self.wait('.link "offline"', lambda: (self.sink_row() or {}).get("link") == "offline", SINK_WAIT_S,
                  seen=lambda: f"row {self.sink_row()}", where=where)
        self.wait(".backlog-records as an integer", lambda: parse_count((self.sink_row() or {}).get("backlog")) is not None,
                          seen=lambda: f"row {self.sink_row()}", where=where)
        v1 = parse_count(self.sink_row()["backlog"])
        t1 = time.monotonic()

        def grown():
            row = self.sink_row() or {}
            v = parse_count(row.get("backlog"))
            return time.monotonic() - t1 >= BACKLOG_GAP_S and v is not None and v > v1 and row.get("link") == "offline"

        self.wait(f".backlog-records to grow past {v1} over >= {BACKLOG_GAP_S} s while offline", grown,
                  SINK_WAIT_S, seen=lambda: f"first {v1}, row now {self.sink_row()}", where=where)
        row = self.sink_row()
        self.d.execute_script("window.scrollTo(0, 0);")
        self.settle()
        path = os.path.join(self.shots, "status.png")
        if not self.d.get_screenshot_as_file(path):
            raise CheckFailed(f"could not write {path}")
        note(f"backlog {v1} -> {row['backlog']} while offline; wrote {path}")

    def check_status_online(self):
        self.harness("broker_up")
        where = ["#sinks", "#status-error"]

        def drained():
            row = self.sink_row() or {}
            return row.get("link") == "online" and parse_count(row.get("backlog")) == 0

        self.wait('.link "online" and .backlog-records "0"', drained, SINK_WAIT_S,
                  seen=lambda: f"row {self.sink_row()}", where=where)

    def check_status_knowledge(self):
        """The knowledge base's version and source, and the signed-in list of questions no SOP
        answered: the out-of-scope question asked earlier in this tab is on it."""
        where = ["#kb-version", "#gaps"]
        info = lambda: self.d.execute_script(
            "var v = document.getElementById('kb-version'), g = document.getElementById('gaps');"
            "return {version: v ? v.textContent.trim() : null,"
            " gaps: g ? Array.prototype.map.call(g.querySelectorAll('q'), function (q) { return q.textContent; }) : null};"
        )
        # The agent restarted since the out-of-scope question (the list is kept in memory only).
        self.d.get(self.url + "/")
        self.ask(OFFICE_EQUIPMENT, OFFICE_PROBLEM)
        self.d.get(self.url + "/status")
        self.wait("#kb-version names where the knowledge base comes from (a directory here)",
                  lambda: ((info() or {}).get("version") or "") == "directory",
                  seen=lambda: f"{info()}", where=where)
        want = OFFICE_PROBLEM[:40]
        self.wait(f"#gaps lists the refused question {want!r}",
                  lambda: any(want in (q or "") for q in (info() or {}).get("gaps") or []),
                  seen=lambda: f"{info()}", where=where)

    CHECKS = [
        ("languages", "check_languages", ["#view-signin"]),
        ("wrong_token", "check_wrong_token", ["#view-signin"]),
        ("sign_in", "check_sign_in", ["#view-signin", "#view-ask"]),
        ("ask_answer", "check_ask_answer", ["#state", "#answer"]),
        ("open_sop", "check_open_sop", ["#doc", "#answer"]),
        ("rate", "check_rate", ["#rating"]),
        ("no_sop", "check_no_sop", ["#state", "#answer"]),
        ("xss", "check_xss", ["#answer", "#recent", "#doc"]),
        ("recent", "check_recent", ["#recent", "#answer"]),
        ("keyboard", "check_keyboard", ["#view-signin", "#view-ask", "#doc"]),
        ("touch_targets", "check_touch_targets", ["#view-ask"]),
        ("screenshots", "check_screenshots", ["#answer"]),
        ("revoked", "check_revoked", ["#view-signin", "#state"]),
        ("agent_down", "check_agent_down", ["#state", "#view-ask"]),
        ("status_offline", "check_status_offline", ["#sinks", "#status-error"]),
        ("status_online", "check_status_online", ["#sinks", "#status-error"]),
        ("status_knowledge", "check_status_knowledge", ["#kb-version", "#gaps"]),
    ]

    # ------------------------------------------------------------------ running and reporting

    def diagnose(self, name, where):
        """Screenshot and the visible text of the relevant elements, to stderr."""
        try:
            alert = self.d.switch_to.alert
            print(f"--- open alert: {alert.text!r} (dismissed)", file=sys.stderr)
            alert.dismiss()
        except (NoAlertPresentException, WebDriverException):
            pass
        try:
            path = os.path.join(self.shots, f"fail-{name}.png")
            self.d.get_screenshot_as_file(path)
            print(f"--- screenshot: {path}", file=sys.stderr)
        except Exception as e:  # keep reporting even if the browser is in a bad state
            print(f"--- screenshot failed: {e}", file=sys.stderr)
        for sel in where or []:
            try:
                els = self.d.find_elements(By.CSS_SELECTOR, sel)
                if not els:
                    print(f"--- {sel}: (not found)", file=sys.stderr)
                elif els[0].is_displayed():
                    print(f"--- {sel} (visible text):\n{els[0].text[:3000]}", file=sys.stderr)
                else:
                    tc = self.d.execute_script("return arguments[0].textContent;", els[0]) or ""
                    print(f"--- {sel}: hidden; textContent: {one_line(tc, 1500)}", file=sys.stderr)
            except Exception as e:
                print(f"--- {sel}: could not read ({e})", file=sys.stderr)
        try:
            print(f"--- url {self.d.current_url}; state {self.snap()}", file=sys.stderr)
        except Exception:
            pass
        self.collect_logs()
        for entry in self.logs[-40:]:
            print(f"--- console {entry.get('level')}: {one_line(entry.get('message'), 400)}", file=sys.stderr)
        sys.stderr.flush()

    def run(self):
        for name, method, where in self.CHECKS:
            try:
                getattr(self, method)()
            except CheckFailed as e:
                self.diagnose(name, e.where or where)
                print(f"FAIL {name}: {one_line(e)}", flush=True)
                return 1
            except UnexpectedAlertPresentException as e:
                self.diagnose(name, where)
                print(f"FAIL {name}: a JavaScript alert opened ({e.alert_text!r}): injected script ran", flush=True)
                return 1
            except WebDriverException as e:
                self.diagnose(name, where)
                print(f"FAIL {name}: webdriver error {type(e).__name__}: {one_line(e.msg or e)}", flush=True)
                return 1
            self.collect_logs()
            print(f"ok {name}", flush=True)
        csp = [e for e in self.logs if "Content Security Policy" in str(e.get("message")) or "Refused to" in str(e.get("message"))]
        for e in csp:
            warn(f"CSP violation in the browser console: {e.get('message')}")
        print("ok all", flush=True)
        return 0


def make_driver(accept="en-US,en"):
    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--lang=" + accept.split(",")[0], "--window-size=1024,768"):
        opts.add_argument(arg)
    opts.add_experimental_option("prefs", {"intl.accept_languages": accept})
    # leave alerts open so that the XSS check can see them (instead of auto-dismissing)
    opts.unhandled_prompt_behavior = "ignore"
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(WAIT_S)
    return driver


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True, help="base URL of the agent, e.g. http://127.0.0.1:8080")
    p.add_argument("--token", required=True, help="valid API token")
    p.add_argument("--token2", required=True, help="second valid token, revoked by the harness on WAIT revoke_token2")
    p.add_argument("--shots", required=True, help="directory for screenshots")
    p.add_argument("--xss-doc", required=True, help="id of the SOP whose title and body carry HTML/script text")
    p.add_argument("--xss-equipment", required=True, help="equipment id whose question retrieves --xss-doc")
    p.add_argument("--xss-question", required=True, help="problem text that retrieves --xss-doc")
    args = p.parse_args()
    os.makedirs(args.shots, exist_ok=True)

    try:
        driver = make_driver()
    except Exception as e:
        print(f"FAIL setup: cannot start headless Chromium via {CHROMEDRIVER}: {one_line(e)}", flush=True)
        return 1
    try:
        e2e = ConsoleE2E(args, driver)
        e2e.set_viewport(1024, 768)
        return e2e.run()
    finally:
        try:
            driver.quit()
        except Exception:
            pass


if __name__ == "__main__":
    sys.exit(main())
