package checkpoint

import (
	"fmt"

	"github.com/google/go-containerregistry/pkg/name"
)

// ParseRepository parses a checkpoint image repository, refusing one that
// names no registry host: a checkpoint image holds a process's whole
// memory, and go-containerregistry would send it to Docker Hub. The
// manager checks its default repository with it, the agent every
// repository it pushes to.
func ParseRepository(repo string) (name.Repository, error) {
	r, err := name.NewRepository(repo, name.StrictValidation)
	if err != nil {
		return name.Repository{}, fmt.Errorf("checkpoint image repository %q names no registry host (it would go to Docker Hub): "+
			"name one, such as registry.example.com/team/checkpoints: %w", repo, err)
	}
	return r, nil
}
