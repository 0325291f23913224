package repo

// Argon2Runs is how many times a password was stretched, for the tests
// of which key files a command tries.
func Argon2Runs() int64 { return argon2Runs.Load() }
