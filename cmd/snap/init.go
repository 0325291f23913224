package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/snapbackup/snap/repo"
)

type initOptions struct {
	*globalOptions
	repo.InitOptions
	generateKey string // --generate-key: the file to write the generated key to
}

func initCommand() *cli.Command {
	return &cli.Command{
		Name:  "init",
		Usage: "create a new repository",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "format-version", Value: repo.FormatVersion, Usage: "repository format: 2 names objects by host (a node reads only its own); 1 is the flat layout older snaps read"},
			&cli.StringFlag{Name: "compression", Value: "auto", Usage: "default compression for new data: auto (per chunk, from a sample: stored as it is, fastest or default), off, fastest, default or better"},
			&cli.IntFlag{Name: "pack-size", Value: repo.DefaultPackSize >> 20, Usage: "target pack size in MiB"},
			&cli.IntFlag{Name: "chunk-min", Usage: "minimum chunk size in KiB (default 512)"},
			&cli.IntFlag{Name: "chunk-avg", Usage: "average chunk size in KiB, a power of two (default 1024)"},
			&cli.IntFlag{Name: "chunk-max", Usage: "maximum chunk size in KiB (default 8192)"},
			&cli.IntFlag{Name: "kdf-memory", Value: int(repo.DefaultKDF.MemoryKiB >> 10), Usage: "memory in MiB each password guess costs (Argon2id); every command needs it once"},
			&cli.IntFlag{Name: "kdf-time", Value: int(repo.DefaultKDF.Time), Usage: "passes over that memory (Argon2id time cost)"},
			generateKeyFlag("open the repository with"),
		},
		Action: func(c *cli.Context) error {
			g, err := globals(c)
			if err != nil {
				return err
			}
			mem, passes := c.Int("kdf-memory"), c.Int("kdf-time")
			if mem < 8 || mem > repo.MaxKDFMemoryKiB>>10 || passes < 1 || passes > repo.MaxKDFTime || mem*passes > repo.MaxKDFWork>>10 {
				return cli.Exit(fmt.Sprintf("--kdf-memory must be 8 to %d MiB, --kdf-time 1 to %d, and memory times time at most %d (got %d and %d)",
					repo.MaxKDFMemoryKiB>>10, repo.MaxKDFTime, repo.MaxKDFWork>>10, mem, passes), exitUsage)
			}
			if c.String("generate-key") != "" && (c.IsSet("kdf-memory") || c.IsSet("kdf-time")) {
				return cli.Exit("--kdf-memory and --kdf-time are a password's stretching; a generated key (--generate-key) has none", exitUsage)
			}
			o := initOptions{globalOptions: g, generateKey: c.String("generate-key"), InitOptions: repo.InitOptions{
				Compression:   c.String("compression"),
				FormatVersion: c.Int("format-version"),
				PackSize:      c.Int("pack-size") << 20,
				ChunkerMin:    c.Int("chunk-min") << 10,
				ChunkerAvg:    c.Int("chunk-avg") << 10,
				ChunkerMax:    c.Int("chunk-max") << 10,
				KDF:           repo.KDFParams{Time: uint32(passes), MemoryKiB: uint32(mem) << 10, Threads: repo.DefaultKDF.Threads},
			}}
			return runInit(c.Context, o)
		},
	}
}

func runInit(ctx context.Context, o initOptions) (err error) {
	var pw string
	if o.generateKey == "" {
		if pw, err = o.password(true); err != nil {
			return err
		}
	}
	be, err := openStorage(ctx, o.storage, true)
	if err != nil {
		return err
	}
	defer be.Close()
	if o.generateKey != "" {
		// Kept before the repository names it; removed if init fails.
		if pw, err = writeGeneratedKey(o.generateKey); err != nil {
			return err
		}
		defer func() {
			if err != nil {
				os.Remove(o.generateKey)
			}
		}()
		o.GeneratedKey = true
	}
	r, err := repo.Init(ctx, be, pw, o.InitOptions, repo.Options{Log: o.log})
	if err != nil {
		return err
	}
	defer r.Close()
	cfg := r.Config()
	if o.json {
		out := map[string]any{"repository": be.Location(), "id": cfg.ID, "version": cfg.Version}
		if o.generateKey != "" {
			out["key_file"] = o.generateKey
		}
		return json.NewEncoder(o.stdout).Encode(out)
	}
	fmt.Fprintf(o.stdout, "created snap repository %s at %s\n", cfg.ID[:8], be.Location())
	if o.generateKey != "" {
		fmt.Fprintf(o.stdout, "Its key is in %s (give it with --password-file %s or SNAP_PASSWORD_FILE). Keep a copy safe, away from the repository: without it the data in the repository cannot be read.\n",
			o.generateKey, o.generateKey)
		return nil
	}
	fmt.Fprintln(o.stdout, "Keep the password safe: without it the data in the repository cannot be read.")
	return nil
}
