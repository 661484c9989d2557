// Building DOM nodes without ever parsing strings as HTML: untrusted text only becomes text nodes.

/** Create an element: el('a', {href, class, text, onclick}, ...children). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = String(value);
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key.startsWith('on') && typeof value === 'function') node.addEventListener(key.slice(2), value);
    else if (value === true) node.setAttribute(key, '');
    else node.setAttribute(key, String(value));
  }
  append(node, children);
  return node;
}

/** Append children (nodes, strings as text, nested arrays; null/false skipped). */
export function append(node, children) {
  for (const child of [children].flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

/** Replace all children of a node. */
export function replace(node, ...children) {
  node.replaceChildren();
  return append(node, children);
}

/** Set text only when it changed (cheap no-op for live updates that change nothing). */
export function setText(node, text) {
  const value = text === null || text === undefined ? '' : String(text);
  if (node.textContent !== value) node.textContent = value;
}

let uid = 0;
/** A unique element id with a readable prefix. */
export function uniqueId(prefix) {
  uid += 1;
  return `${prefix}-${uid}`;
}

/** A labelled form control with a slot for its error message below it. */
export function field(label, control, hint) {
  if (!control.id) control.id = uniqueId('f');
  const error = el('p', { class: 'field-error', id: `${control.id}-error`, 'aria-live': 'polite' });
  const describedBy = [error.id];
  let hintNode = null;
  if (hint) {
    hintNode = el('p', { class: 'hint', id: `${control.id}-hint`, text: hint });
    describedBy.unshift(hintNode.id);
  }
  control.setAttribute('aria-describedby', describedBy.join(' '));
  return el('div', { class: 'field' }, el('label', { for: control.id, text: label }), control, hintNode, error);
}

/** Show (or clear, with a falsy message) the error next to a control made by field(). */
export function showFieldError(control, message) {
  const error = document.getElementById(`${control.id}-error`);
  if (error) setText(error, message || '');
  if (message) control.setAttribute('aria-invalid', 'true');
  else control.removeAttribute('aria-invalid');
}

/** Clear every field error inside a form. */
export function clearFieldErrors(form) {
  for (const node of form.querySelectorAll('.field-error')) node.textContent = '';
  for (const node of form.querySelectorAll('[aria-invalid]')) node.removeAttribute('aria-invalid');
}

/** A status message area (polite live region). */
export function notice(kind = 'info', text = '') {
  return el('p', { class: `notice notice-${kind}`, role: kind === 'error' ? 'alert' : 'status', text, hidden: !text });
}

/** Fill a notice made by notice(); empty text hides it. */
export function setNotice(node, text, kind) {
  if (kind) {
    node.className = `notice notice-${kind}`;
    node.setAttribute('role', kind === 'error' ? 'alert' : 'status');
  }
  setText(node, text || '');
  node.hidden = !text;
}

/** Offer text as a file download (CSV export). */
export function download(filename, text, type = 'text/csv') {
  const url = URL.createObjectURL(new Blob([text], { type: `${type};charset=utf-8` }));
  const link = el('a', { href: url, download: filename, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}
