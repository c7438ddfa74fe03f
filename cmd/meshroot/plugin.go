package main

import (
	"github.com/meshroot/meshroot/internal/pluginhost"
	"github.com/meshroot/meshroot/keys"
)

// plugins runs meshroot-plugin, where the cloud KMS key managers and the
// step-ca upstream live, at their first use (docs/keys.md, "The plugin").
// run stops it when the command ends; the kernel kills it if meshroot dies.
var plugins = pluginhost.New("", nil)

// The cloud KMS schemes belong to key managers in the plugin.
func init() { keys.Register(pluginhost.KeyBackend(plugins, pluginhost.KMSSchemes...)) }

// usePlugin points the plugin host at keys.plugin (--plugin): empty looks
// next to this executable, then in $PATH.
func usePlugin(cfg keysConfig) { plugins.SetPath(cfg.Plugin) }
