package sluicev1

// HeaderSealAAD is the additional data a custom header value of an
// endpoint is sealed with (Endpoint.headers_sealed): the endpoint id and
// the header's name, so a sealed value copied onto another endpoint or
// under another name fails to open instead of being sent there. Ids hold
// no "/", and header names are RFC 9110 tokens, which hold none either, so
// the text is unambiguous; and it never equals a bare endpoint id, the
// additional data of the signing secret.
func HeaderSealAAD(endpointID, name string) string {
	return endpointID + "/header/" + name
}
