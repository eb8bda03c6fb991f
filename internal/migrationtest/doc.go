// Package migrationtest holds the FAKES the migration controller's own
// suite (pkg/controllers/migration) and its benchmark (test/bench/controller)
// run it against: replay sidecars, a broker offset query, a node agent and
// a kubelet that answer at once, named as fakes wherever they are used.
// What they fake is covered for real by the sandbox's e2e specs; here they
// make the controller's own logic exact and fast to test.
package migrationtest
