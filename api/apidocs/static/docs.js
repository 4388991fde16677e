// Start Swagger UI on this server's own OpenAPI document. The online validator is off:
// the page fetches nothing from anywhere but this server.
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null,
  tryItOutEnabled: true,
});
