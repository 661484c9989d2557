// The API docs page (/docs): Swagger UI reading /openapi.json. "Try it out" sends requests from
// this page, so the browser's session cookie goes along (writes also need the X-CSRF-Token header,
// from POST /api/auth/login or GET /api/auth/me); "Authorize" takes an API token instead.
// A classic script run after the bundle (both deferred), as the bundle is not an ES module.
window.addEventListener('DOMContentLoaded', () => {
  window.ui = window.SwaggerUIBundle({
    url: '/openapi.json',
    dom_id: '#swagger-ui',
    deepLinking: true,
    validatorUrl: null, // no request to an outside validator
    tryItOutEnabled: false,
  });
});
