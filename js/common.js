// What both prompt_attr widgets (widget.js, compare.js) share. Python prepends this file to
// each of them (views/widget.py), so it is one ES module with theirs and needs no import.
//
// Prompt text and answers are untrusted: they reach the DOM only as text nodes (appendText,
// which draws each bidi control in a marked span of its own), and a colour is applied only
// if it is an rgba() of numbers, as Python writes them.

const COLOUR = /^rgba\(\d{1,3},\d{1,3},\d{1,3},(?:0|1|0?\.\d+)\)$/;

function colour(css) {
  return typeof css === "string" && COLOUR.test(css) ? css : "";
}

// Bidi controls (the class of core/text.py's BIDI_CONTROLS): each is drawn alone in an
// isolating, outlined span (.pa-bidi in widget.css), so `user\u202eexe.txt` reads in its
// logical order and the reader sees where a control sits; textContent stays exact.
const BIDI = /[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/;
const BIDI_SPLIT = /([\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069])/;

function appendText(node, text) {
  const s = String(text);
  if (!BIDI.test(s)) {
    node.appendChild(document.createTextNode(s));
    return;
  }
  for (const piece of s.split(BIDI_SPLIT)) {
    if (!piece) continue;
    if (piece.length === 1 && BIDI.test(piece)) {
      const mark = document.createElement("span");
      mark.className = "pa-bidi";
      mark.dir = "ltr";
      mark.title = `U+${piece.charCodeAt(0).toString(16).toUpperCase().padStart(4, "0")}: a bidi control, shown here and not applied`;
      mark.textContent = piece;
      node.appendChild(mark);
    } else {
      node.appendChild(document.createTextNode(piece));
    }
  }
}

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) appendText(node, text);
  return node;
}

// A focusable element that acts as a button: a click, or Enter or Space while it has focus.
function pressable(node, activate) {
  node.tabIndex = 0;
  node.setAttribute("role", "button");
  node.addEventListener("click", activate);
  node.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); activate(e); }
  });
  return node;
}

// A displayed widget comes with a second output, its saved view: the static heat-map a
// notebook shows once the kernel is gone (views/html.py: saved_view_html). While this live
// view is on the page, that twin (marked data-prompt-attr-view="<view_key>") is hidden, so a
// live session shows one heat-map; the rule goes with the view. Returns the clean-up.
function hideSavedView(model) {
  const key = model.get("view_key");
  if (!key) return () => {};
  const marked = `[data-prompt-attr-view="${CSS.escape(key)}"]`;
  const rule = document.createElement("style");
  rule.dataset.promptAttrLive = key;
  rule.textContent = `${marked}, .jp-OutputArea-child:has(${marked}) { display: none !important; }`;
  document.head.appendChild(rule);
  return () => rule.remove();
}
