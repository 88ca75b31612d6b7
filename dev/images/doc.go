// Package images holds the test of Sluice's container images: it builds
// them with dev/images/build.sh (buildah) and checks each one's config, its
// root filesystem and that its entrypoint starts. The images themselves are
// defined by dev/images/Containerfile.
package images
