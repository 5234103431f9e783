//! Certificates and keys for a throwaway kube-apiserver.
//!
//! We mint our own CA rather than let the apiserver self-sign, so clients can
//! verify TLS properly (rustls is strict about the self-signed shortcut) and
//! so later tests can mint service-account tokens with a key we know.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

use crate::Error;

/// Files written by [`write`], all PEM.
#[derive(Debug, Clone)]
pub struct Pki {
    pub ca_cert: PathBuf,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    /// Signs service-account tokens (`--service-account-signing-key-file`).
    pub service_account_key: PathBuf,
    /// Verifies them (`--service-account-key-file`).
    pub service_account_pub: PathBuf,
    pub ca_pem: String,
}

pub fn write(dir: &Path) -> Result<Pki, Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create pki dir", dir, e))?;

    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "ecs-operator testenv CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

    let mut srv_params = CertificateParams::new(vec![
        "localhost".to_string(),
        "kubernetes".to_string(),
        "kubernetes.default.svc".to_string(),
    ])?;
    srv_params
        .subject_alt_names
        .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    srv_params
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    srv_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    srv_params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let srv_key = KeyPair::generate()?;
    let srv_cert = srv_params.signed_by(&srv_key, &ca)?;

    let sa_key = KeyPair::generate()?;

    let pki = Pki {
        ca_cert: dir.join("ca.crt"),
        serving_cert: dir.join("apiserver.crt"),
        serving_key: dir.join("apiserver.key"),
        service_account_key: dir.join("sa.key"),
        service_account_pub: dir.join("sa.pub"),
        ca_pem: ca.pem(),
    };
    for (path, body) in [
        (&pki.ca_cert, pki.ca_pem.clone()),
        (&pki.serving_cert, srv_cert.pem()),
        (&pki.serving_key, srv_key.serialize_pem()),
        (&pki.service_account_key, sa_key.serialize_pem()),
        (&pki.service_account_pub, sa_key.public_key_pem()),
    ] {
        std::fs::write(path, body).map_err(|e| Error::io("write", path, e))?;
    }
    Ok(pki)
}
