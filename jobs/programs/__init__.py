"""Programs shipped with the package for the bundled job definitions (`{project}/jobs/programs/...`)."""
