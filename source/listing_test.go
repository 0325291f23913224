package source

import (
	"strings"
	"testing"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		name string
		want Role
	}{
		{"000056.sst", RoleTable},
		{"000056.ldb", RoleTable},
		{"000057.blob", RoleTable},
		{"000051.log", RoleWAL},
		{"MANIFEST-000046", RoleManifest},
		{"MANIFEST-", RoleOther},
		{"CURRENT", RoleCurrent},
		{"CURRENT.bak", RoleOther},
		{"current", RoleOther},
		{"OPTIONS-000048", RoleOptions},
		{"OPTIONS-", RoleOther},
		{"IDENTITY", RoleOther},
		{"LOCK", RoleOther},
		{"LOG", RoleOther},
		{"LOG.old.1700000000", RoleOther},
	}
	for _, tt := range tests {
		if got := Classify(tt.name); got != tt.want {
			t.Errorf("Classify(%q) = %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestAppendOnly(t *testing.T) {
	want := map[Role]bool{
		RoleTable: false, RoleWAL: true, RoleManifest: true,
		RoleCurrent: false, RoleOptions: false, RoleOther: false,
	}
	for r, w := range want {
		if got := r.AppendOnly(); got != w {
			t.Errorf("%q.AppendOnly() = %v, want %v", r, got, w)
		}
	}
}

func TestValidate(t *testing.T) {
	current := File{Name: "CURRENT", Role: RoleCurrent, Length: 16, Content: []byte("MANIFEST-000046\n")}
	manifest := File{Name: "MANIFEST-000046", Role: RoleManifest, Length: 514}
	table := File{Name: "000056.sst", Role: RoleTable, Length: -1}
	tests := []struct {
		name  string
		files []File
		want  string // substring of the error; "" for valid
	}{
		{"rocksdb", []File{table, current, manifest}, ""},
		{"no rocksdb pointer files", []File{table, {Name: "appendonly.aof.1.incr.aof", Role: RoleWAL, Length: 10}}, ""},
		{"empty", nil, "no files"},
		{"bad name", []File{{Name: "a/b", Role: RoleOther, Length: -1}}, `file 1 "a/b": file name contains '/'`},
		{"dotdot", []File{{Name: "..", Role: RoleOther, Length: -1}}, "not a file name"},
		{"unknown role", []File{{Name: "x", Role: "bogus", Length: -1}}, `unknown role "bogus"`},
		{"length below -1", []File{{Name: "x", Role: RoleOther, Length: -2}}, "invalid length -2"},
		{"WAL without length", []File{{Name: "1.log", Role: RoleWAL, Length: -1}}, "wal file without a byte length"},
		{"duplicate", []File{table, table}, `file 2 "000056.sst": listed twice (first as file 1)`},
		{"content length mismatch", []File{table, manifest, {Name: "CURRENT", Role: RoleCurrent, Length: -1, Content: current.Content}}, "differs from its 16 bytes"},
		{"CURRENT without content", []File{manifest, {Name: "CURRENT", Role: RoleCurrent, Length: -1}}, "without synthesized content"},
		{"CURRENT names another manifest", []File{manifest, {Name: "CURRENT", Role: RoleCurrent, Length: 16, Content: []byte("MANIFEST-000047\n")}}, "does not name the listed manifest"},
		{"two manifests", []File{current, manifest, {Name: "MANIFEST-000050", Role: RoleManifest, Length: 1}}, "two MANIFEST files"},
		{"two currents", []File{current, manifest, {Name: "CURRENT2", Role: RoleCurrent, Length: 16, Content: current.Content}}, "two CURRENT files"},
		{"manifest alone", []File{table, manifest}, "no CURRENT"},
		{"current alone", []File{table, current}, "no MANIFEST"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Listing{Files: tt.files}.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tt.want != "" && err == nil:
				t.Fatalf("Validate accepted %+v, want error containing %q", tt.files, tt.want)
			case tt.want != "" && !strings.Contains(err.Error(), tt.want):
				t.Fatalf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}
