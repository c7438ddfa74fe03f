// Package pluginserve is meshroot-plugin's side of the plugin protocol: it
// serves the KeyManager and Upstream services of api/meshroot/plugin/v1
// over the backends that are kept out of the meshroot binary (the cloud
// KMS key managers of keys/kms and the step-ca upstream of
// upstream/stepca). Each request names a key manager URI or an upstream
// reference and file paths; the backends are opened on first use, cached
// for the life of the process, and read their secrets from those files.
package pluginserve
