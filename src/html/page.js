// The hover panel: the engine's state after the step under the pointer,
// from the embedded snapshots. Everything else on the page is static.
(function () {
  'use strict';
  var SNAPS = JSON.parse(document.getElementById('snapshots').textContent);
  var body = document.body;
  var FIRST = +body.dataset.first;
  var ROWS = +body.dataset.rows;
  var grid = document.getElementById('grid');
  var cursor = document.getElementById('cursor');
  var panel = document.getElementById('state');
  // Fields of the step itself, shown at the top; the rest is engine state.
  var STEP_FIELDS = ['step', 'text', 'task', 'op', 'begins', 'outcome', 'detail', 'line', 'drain', 'what', 'events'];
  // Per list: the field naming an entry, and whether to draw it with one
  // column per entry (few entries, many fields).
  var LISTS = {
    transactions: { key: 'transid', columns: true },
    tasks: { key: 'task', columns: true },
    block_groups: { key: 'name', columns: true },
    extents: { key: 'name', columns: false },
    cache_io: { key: 'bg', columns: false }
  };
  var SIZES = { start: 1, len: 1, used: 1, reserved: 1 };
  var pinned = null;
  var shown = null;

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function size(n) {
    var units = [[1 << 30, 'G'], [1 << 20, 'M'], [1024, 'K']];
    for (var i = 0; i < units.length; i++) {
      if (n >= units[i][0] && n % units[i][0] === 0) return n / units[i][0] + units[i][1];
    }
    return String(n);
  }
  function fmt(k, v) {
    if (v === null || v === undefined) return '\u2013';
    if (v === true) return 'yes';
    if (v === false) return 'no';
    if (Array.isArray(v)) return v.length ? v.join(', ') : '[]';
    if (typeof v === 'number' && SIZES[k]) return size(v);
    return String(v);
  }
  // One level of nesting flattened: handle.transid, handle.new_bgs, ...
  function flat(o) {
    var out = {};
    Object.keys(o).forEach(function (k) {
      var v = o[k];
      if (v && typeof v === 'object' && !Array.isArray(v)) {
        Object.keys(v).forEach(function (j) { out[k + '.' + j] = v[j]; });
      } else {
        out[k] = v;
      }
    });
    return out;
  }
  function byKey(list, key) {
    var m = {};
    (list || []).forEach(function (x) { m[String(x[key])] = flat(x); });
    return m;
  }
  function table(name, list, prev) {
    var spec = LISTS[name] || { key: null, columns: false };
    var t = el('table');
    if (!list.length) return el('div', '', 'none');
    var rows = list.map(flat);
    var fields = [];
    rows.forEach(function (r) {
      Object.keys(r).forEach(function (f) { if (fields.indexOf(f) < 0) fields.push(f); });
    });
    var before = spec.key && prev ? byKey(prev, spec.key) : null;
    function changed(r, f) {
      if (!before) return false;
      var p = before[String(r[spec.key])];
      return !p || JSON.stringify(p[f]) !== JSON.stringify(r[f]);
    }
    var tr;
    if (spec.columns) {
      tr = el('tr');
      tr.appendChild(el('th', '', spec.key));
      rows.forEach(function (r) { tr.appendChild(el('th', '', r[spec.key])); });
      t.appendChild(tr);
      fields.forEach(function (f) {
        if (f === spec.key) return;
        tr = el('tr');
        tr.appendChild(el('td', 'k', f));
        rows.forEach(function (r) { tr.appendChild(el('td', changed(r, f) ? 'changed' : '', fmt(f, r[f]))); });
        t.appendChild(tr);
      });
    } else {
      tr = el('tr');
      fields.forEach(function (f) { tr.appendChild(el('th', '', f)); });
      t.appendChild(tr);
      rows.forEach(function (r) {
        tr = el('tr');
        fields.forEach(function (f) { tr.appendChild(el('td', changed(r, f) ? 'changed' : '', fmt(f, r[f]))); });
        t.appendChild(tr);
      });
    }
    return t;
  }
  function render(i) {
    if (i === shown || i < 0 || i >= SNAPS.length) return;
    shown = i;
    var s = SNAPS[i], p = i > 0 ? SNAPS[i - 1] : null;
    panel.replaceChildren();
    var title = s.step === 0 ? 'After mkfs' : 'After step ' + s.step + ': ' + s.text;
    panel.appendChild(el('h2', '', title));
    if (pinned !== null) panel.appendChild(el('div', 'pin', 'pinned (click the step again, or Esc, to unpin; \u2191\u2193 move)'));
    var meta = [];
    if (s.op) meta.push((s.begins ? 'begins ' : 'continues ') + s.op);
    if (s.outcome) meta.push(s.outcome + (s.detail ? ': ' + s.detail : ''));
    if (s.line) meta.push('script line ' + s.line);
    if (s.drain) meta.push('taken by the drain');
    panel.appendChild(el('div', '', meta.join('; ')));
    if (s.what) panel.appendChild(el('div', 'what', s.what));
    var scalars = el('table');
    Object.keys(s).forEach(function (k) {
      if (STEP_FIELDS.indexOf(k) >= 0) return;
      var v = s[k];
      if (LISTS[k] || (Array.isArray(v) && v.length && typeof v[0] === 'object')) return;
      var tr = el('tr');
      tr.appendChild(el('td', 'k', k));
      var ch = p && JSON.stringify(p[k]) !== JSON.stringify(v);
      tr.appendChild(el('td', ch ? 'changed' : '', fmt(k, v)));
      scalars.appendChild(tr);
    });
    panel.appendChild(scalars);
    Object.keys(s).forEach(function (k) {
      var v = s[k];
      if (!Array.isArray(v) || (v.length && typeof v[0] !== 'object')) return;
      if (k === 'events' && !v.length) return;
      panel.appendChild(el('h3', '', k.replace(/_/g, ' ')));
      panel.appendChild(table(k, v, p ? p[k] : null));
    });
    panel.appendChild(el('div', '', 'highlighted: changed by this step'));
  }
  function place(i) {
    var r = 3 + i;
    cursor.style.gridArea = r + '/1/' + (r + 1) + '/-1';
  }
  function rowAt(ev) {
    var rect = grid.getBoundingClientRect();
    var cs = getComputedStyle(document.documentElement);
    var head = parseFloat(cs.getPropertyValue('--head1')) + parseFloat(cs.getPropertyValue('--head2'));
    var row = parseFloat(cs.getPropertyValue('--row'));
    var i = Math.floor((ev.clientY - rect.top - head) / row);
    if (i < 0 || i >= ROWS) return null;
    return Math.min(i, SNAPS.length - 1);
  }
  function show(i) { place(i); render(i); }
  grid.addEventListener('mousemove', function (ev) {
    if (pinned !== null) return;
    var i = rowAt(ev);
    if (i !== null) show(i);
  });
  grid.addEventListener('click', function (ev) {
    var i = rowAt(ev);
    if (i === null) return;
    pinned = pinned === i ? null : i;
    cursor.classList.toggle('pinned', pinned !== null);
    shown = null;
    show(i);
  });
  document.addEventListener('keydown', function (ev) {
    if (pinned === null) return;
    var d = ev.key === 'ArrowDown' ? 1 : ev.key === 'ArrowUp' ? -1 : 0;
    if (ev.key === 'Escape') {
      pinned = null;
      cursor.classList.remove('pinned');
      shown = null;
      show(focus);
      return;
    }
    if (!d) return;
    ev.preventDefault();
    pinned = Math.max(0, Math.min(SNAPS.length - 1, pinned + d));
    show(pinned);
  });
  var focus = Math.max(0, +body.dataset.focus - FIRST);
  // `page.html#s12` (and the violation's link) pins step 12.
  function fromHash() {
    var m = /^#s(\d+)$/.exec(location.hash);
    var k = m ? +m[1] - FIRST : -1;
    if (k < 0 || k >= SNAPS.length) return false;
    pinned = k;
    cursor.classList.add('pinned');
    shown = null;
    show(k);
    // Bring the row into the chart's view (rows have no ids: the window
    // itself does not jump).
    var chart = document.getElementById('chart');
    var row = parseFloat(getComputedStyle(document.documentElement).getPropertyValue('--row'));
    chart.scrollTop = Math.max(0, k * row - chart.clientHeight / 3);
    return true;
  }
  window.addEventListener('hashchange', fromHash);
  if (!fromHash()) show(focus);
  // For the browser test: the script ran to its end, and when (ms since
  // navigation start) it did and the load event came.
  document.documentElement.setAttribute('data-ready', '1');
  document.documentElement.setAttribute('data-render-ms', performance.now().toFixed(1));
  window.addEventListener('load', function () {
    document.documentElement.setAttribute('data-load-ms', performance.now().toFixed(1));
  });
})();
