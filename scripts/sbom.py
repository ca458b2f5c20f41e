"""Writes the CycloneDX SBOM of the shipped binary from the dependency list cargo-auditable embedded in it.

The list in the binary's .dep-v0 section is exactly what was compiled in (build-only crates marked as such),
which a resolver's view of Cargo.toml is not. Licences and descriptions come from `cargo metadata`, checksums
from Cargo.lock. The document is built and validated with the CycloneDX project's own library
(cyclonedx-python-lib), so the format is theirs, not ours.

Usage: sbom.py DEP_V0_JSON CARGO_METADATA_JSON CARGO_LOCK VERSION REVISION OUTPUT
"""

import json
import sys
import tomllib

from cyclonedx.contrib.license.factories import LicenseFactory
from cyclonedx.model import HashAlgorithm, HashType, Property
from cyclonedx.model.bom import Bom
from cyclonedx.model.component import Component, ComponentScope, ComponentType
from cyclonedx.output.json import JsonV1Dot6
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packageurl import PackageURL


def main(dep_v0, metadata_json, cargo_lock, version, revision, output):
    packages = json.load(open(dep_v0))["packages"]
    metadata = {(p["name"], p["version"]): p for p in json.load(open(metadata_json))["packages"]}
    checksums = {
        (p["name"], p["version"]): p["checksum"]
        for p in tomllib.load(open(cargo_lock, "rb"))["package"]
        if "checksum" in p
    }
    licenses = LicenseFactory()

    def component(package, is_root):
        key = (package["name"], package["version"])
        meta = metadata.get(key, {})
        build_only = package.get("kind") == "build"
        c = Component(
            type=ComponentType.APPLICATION if is_root else ComponentType.LIBRARY,
            name=package["name"],
            version=package["version"],
            bom_ref=f'{package["name"]}@{package["version"]}',
            purl=PackageURL(type="cargo", name=package["name"], version=package["version"]),
            description=meta.get("description"),
            # Build scripts' dependencies run at build time and are not in the binary.
            scope=ComponentScope.EXCLUDED if build_only else ComponentScope.REQUIRED,
        )
        if meta.get("license"):
            c.licenses.add(licenses.make_from_string(meta["license"]))
        if key in checksums:
            c.hashes.add(HashType(alg=HashAlgorithm.SHA_256, content=checksums[key]))
        c.properties.add(Property(name="cdx:cargo:source", value=package.get("source", "unknown")))
        if is_root:
            c.properties.add(Property(name="vcs:revision", value=revision))
        return c

    components = [component(p, p.get("root", False)) for p in packages]
    roots = [i for i, p in enumerate(packages) if p.get("root")]
    if len(roots) != 1:
        sys.exit(f"sbom: expected one root package in the embedded list, found {len(roots)}")
    root = components[roots[0]]
    if root.version != version:
        sys.exit(f"sbom: the binary is version {root.version}, the crate is {version}: rebuild it")

    bom = Bom()
    bom.metadata.component = root
    bom.metadata.properties.add(Property(name="vcs:revision", value=revision))
    for i, c in enumerate(components):
        if i != roots[0]:
            bom.components.add(c)
    for i, p in enumerate(packages):
        bom.register_dependency(components[i], [components[d] for d in p.get("dependencies", [])])

    text = JsonV1Dot6(bom).output_as_string(indent=2)
    errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    if errors:
        sys.exit(f"sbom: the document does not validate against CycloneDX 1.6: {errors}")
    with open(output, "w") as out:
        out.write(text + "\n")
    build = sum(1 for p in packages if p.get("kind") == "build")
    print(
        f"sbom: {output}: CycloneDX 1.6, {root.name} {root.version} at {revision}, "
        f"{len(packages) - 1} crates ({build} build-only), validated"
    )


if __name__ == "__main__":
    if len(sys.argv) != 7:
        sys.exit(__doc__)
    main(*sys.argv[1:])
