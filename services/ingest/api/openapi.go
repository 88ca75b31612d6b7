package api

import _ "embed"

// openAPIDocument is the OpenAPI 3.1 description of every route, served at
// /openapi.json; a test keeps it and the routes in step.
//
//go:embed openapi.json
var openAPIDocument []byte
