// Module resolution hooks: the static files as Django serves them. dashboard.js imports
// "../realtime_async/client.js", a sibling under STATIC_URL, but in the source tree the two apps
// keep their static files apart. Registered by the tests that import dashboard.js, this maps such
// imports onto realtime_async's own files, so widget.js and dashboard.js share module instances
// (one page client) as they do in a browser.

const DASHBOARD_STATIC = new URL("../../realtime_async/contrib/dashboard/static/", import.meta.url).href;
const APP_STATIC = new URL("../../realtime_async/static/", import.meta.url).href;

export async function resolve(specifier, context, nextResolve) {
  if (context.parentURL?.startsWith(DASHBOARD_STATIC) && /^\.{1,2}\//.test(specifier)) {
    const url = new URL(specifier, context.parentURL).href;
    if (url.startsWith(`${DASHBOARD_STATIC}realtime_async/`)) {
      return nextResolve(APP_STATIC + url.slice(DASHBOARD_STATIC.length), context);
    }
  }
  return nextResolve(specifier, context);
}
