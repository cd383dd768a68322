//! Apache Kafka's jars: found in a cache outside the clone, fetched once by
//! Maven from `tests/kafka/pom.xml` when missing (or when the pom changed).

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context};

/// The pom the jars come from; `vigil bench` fetches with it when the cache
/// is empty, as `tests/kafka/fetch.sh` does.
const POM: &str = include_str!("../../tests/kafka/pom.xml");

/// Apache Kafka's jars on this machine.
#[derive(Debug, Clone)]
pub struct Distribution {
    pub libs: PathBuf,
    /// `4.1.1`, from the pom.
    pub version: String,
}

impl Distribution {
    /// `$VIGIL_KAFKA_LIBS`, else `~/.cache/vigil/kafka-<version>/libs`,
    /// fetched with `mvn` first when it is not complete there.
    pub fn locate() -> anyhow::Result<Distribution> {
        let version = pom_version().context("tests/kafka/pom.xml names no kafka_2.13 version")?;
        let libs = match std::env::var_os("VIGIL_KAFKA_LIBS") {
            Some(dir) => PathBuf::from(dir),
            None => {
                let home = std::env::var_os("HOME").context("HOME is not set: set VIGIL_KAFKA_LIBS")?;
                PathBuf::from(home).join(format!(".cache/vigil/kafka-{version}/libs"))
            }
        };
        let dist = Distribution { libs, version };
        if !dist.complete() {
            static FETCH: std::sync::Mutex<()> = std::sync::Mutex::new(());
            let _one_at_a_time = FETCH.lock().unwrap_or_else(|e| e.into_inner());
            if !dist.complete() {
                dist.fetch()?;
            }
        }
        Ok(dist)
    }

    /// `kafka-4.1.1`: how summaries and benchmark results name the broker.
    pub fn label(&self) -> String {
        format!("kafka-{}", self.version)
    }

    /// Whether the jars of this pom are all there: a fetch ends by writing
    /// the pom it fetched to `.complete` (a changed pom fetches again).
    fn complete(&self) -> bool {
        std::fs::read_to_string(self.libs.join(".complete")).is_ok_and(|fetched| fetched == POM)
    }

    fn fetch(&self) -> anyhow::Result<()> {
        eprintln!("fetching Apache Kafka {} with Maven into {}", self.version, self.libs.display());
        let _ = std::fs::remove_dir_all(&self.libs);
        std::fs::create_dir_all(&self.libs).with_context(|| format!("creating {}", self.libs.display()))?;
        let pom = self.libs.join("pom.xml.fetch");
        std::fs::write(&pom, POM)?;
        let status = Command::new("mvn")
            .args(["-q", "-B", "-Dstyle.color=never", "-f"])
            .arg(&pom)
            .args(["dependency:copy-dependencies", "-DincludeScope=runtime"])
            .arg(format!("-DoutputDirectory={}", self.libs.display()))
            .status()
            .context("running mvn (install Maven, or run tests/kafka/fetch.sh, or set VIGIL_KAFKA_LIBS)")?;
        let _ = std::fs::remove_file(&pom);
        if !status.success() {
            bail!("mvn could not fetch Apache Kafka {} ({status}); see its output above", self.version);
        }
        std::fs::write(self.libs.join(".complete"), POM)?;
        Ok(())
    }

    pub(super) fn java(&self) -> Command {
        let java = std::env::var_os("JAVA_HOME")
            .map(|h| PathBuf::from(h).join("bin/java"))
            .filter(|j| j.exists())
            .unwrap_or_else(|| "java".into());
        let mut command = Command::new(java);
        command.arg("-cp").arg(self.libs.join("*"));
        command
    }
}

fn pom_version() -> Option<String> {
    let after = POM.split("<artifactId>kafka_2.13</artifactId>").nth(1)?;
    let start = after.find("<version>")? + "<version>".len();
    let end = after[start..].find("</version>")? + start;
    Some(after[start..end].trim().to_owned())
}
