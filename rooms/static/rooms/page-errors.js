/**
 * page-errors.js — tells the user what went wrong when the editor page (editor.html) cannot
 * start or fails while running: a script or stylesheet that did not load, an uncaught error, a
 * promise rejection nobody handled. Without it such a page stays blank or silently stops.
 *
 * A classic script with no imports, loaded before everything else: it must be listening before
 * the module scripts load, and it must run when they do not. (The page's Content Security Policy
 * allows no inline script, so this is a file of its own.) editor.html's static "Loading" note
 * covers the case where even this file does not load: editor.js removes that note when it runs.
 */
(() => {
  const shown = new Set();

  /** Add a line to the banner; a `cause` (a file that did not load) goes above the rest. */
  function show(text, cause = false) {
    if (shown.has(text)) return;
    shown.add(text);
    const render = () => {
      const banner = document.getElementById("page-error");
      const line = document.createElement("p");
      line.textContent = text;
      if (cause) banner.prepend(line);
      else banner.append(line);
      banner.hidden = false;
      // The loading note would only contradict this.
      document.getElementById("boot")?.remove();
    };
    if (document.readyState === "loading") {
      document.addEventListener("DOMContentLoaded", render, {once: true});
    } else {
      render();
    }
  }

  // Capture phase: a script or stylesheet's load error does not bubble, but passes the window.
  window.addEventListener(
    "error",
    (event) => {
      const target = event.target;
      if (target instanceof HTMLScriptElement) {
        show(
          `The editor could not start: ${target.src} or a file it imports did not load. ` +
            "Check your connection, then reload the page.",
        );
      } else if (target instanceof HTMLLinkElement) {
        show(`Could not load ${target.href}. Check your connection, then reload the page.`, true);
      } else if (event instanceof ErrorEvent && !/ResizeObserver loop/.test(event.message)) {
        // (A ResizeObserver loop notice is harmless: the browser just delays a layout update.)
        show(`Something went wrong in the page: ${event.message}. If it stops working, reload it.`);
      }
    },
    true,
  );

  window.addEventListener("unhandledrejection", (event) => {
    const reason = event.reason;
    const message = reason instanceof Error ? reason.message : String(reason?.message ?? reason);
    show(`Something went wrong in the page: ${message}. If it stops working, reload it.`);
  });
})();
