package api

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"

	"github.com/valyala/fasthttp"
)

// principal is who is calling: the admin, or one tenant.
type principal struct {
	admin  bool
	tenant string
}

func hashKey(key string) [32]byte { return sha256.Sum256([]byte(key)) }

// authenticate reads the bearer key. The admin key is compared in constant
// time on its hash; tenant keys are looked up by hash, which reveals
// nothing about a key through timing (the lookup's timing depends on a
// SHA-256 of the key, not on the key). A missing or unknown key is 401.
func (a *API) authenticate(ctx *fasthttp.RequestCtx) (principal, bool) {
	auth := ctx.Request.Header.Peek("Authorization")
	// The scheme is case-insensitive (RFC 9110 §11.1).
	ok := len(auth) > len("Bearer ") && bytes.EqualFold(auth[:len("Bearer ")], []byte("Bearer "))
	var key []byte
	if ok {
		key = auth[len("Bearer "):]
	}
	if !ok || len(bytes.TrimSpace(key)) == 0 {
		ctx.Response.Header.Set("WWW-Authenticate", `Bearer realm="sluice"`)
		WriteProblem(ctx, fasthttp.StatusUnauthorized, "unauthorized",
			"send an API key as Authorization: Bearer <key>")
		return principal{}, false
	}
	h := hashKey(string(bytes.TrimSpace(key)))
	if a.opts.AdminKey != "" && subtle.ConstantTimeCompare(h[:], a.adminHash[:]) == 1 {
		return principal{admin: true}, true
	}
	if k, ok := a.store.APIKeyByHash(h); ok {
		if _, ok := a.store.Get(k.TenantId); ok {
			return principal{tenant: k.TenantId}, true
		}
	}
	ctx.Response.Header.Set("WWW-Authenticate", `Bearer realm="sluice", error="invalid_token"`)
	WriteProblem(ctx, fasthttp.StatusUnauthorized, "unauthorized", "the API key is not valid")
	return principal{}, false
}
