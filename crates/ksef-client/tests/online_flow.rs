//! The client against the simulator over loopback HTTP: authentication, online sessions,
//! statuses, UPOs, duplicates, validation, crypto, key rotation and session errors.

mod common;

use common::*;
use ksef_client::failure_map::InvoiceOutcome;
use ksef_client::{Credentials, KsefClient, KsefToken, SendOptions};
use relay_domain::{ContentHash, ErrorClass, KsefNumber, Nip};
use sha2::{Digest, Sha256};

#[tokio::test]
async fn token_auth_caches_refreshes_and_logs_in_again() {
    let sim = sim().await;
    let c = client(&sim);
    let t1 = c.access_token().await.unwrap();
    let t2 = c.access_token().await.unwrap();
    assert!(format!("{t1:?}").contains("redacted"));
    assert_eq!(t1.valid_until, t2.valid_until, "the second call is served from the cache");

    // KSeF drops the access token: the next call gets 401, refreshes, and succeeds.
    sim.expire_access_tokens();
    let s = c.open_online_session().await.unwrap();
    assert_eq!(s.reference.len(), 36);

    // The refresh token is revoked too (21301): the client logs in from scratch.
    sim.revoke_refresh_tokens();
    c.open_online_session().await.unwrap();
}

#[tokio::test]
async fn a_wrong_token_is_an_operators_auth_failure_with_ksef_s_words() {
    let sim = sim().await;
    let bad = Credentials::Token {
        context: Nip::parse("9999999999").unwrap(),
        token: KsefToken::new("not-the-token"),
    };
    let c = KsefClient::new(client_config(&sim), Some(bad)).unwrap();
    let f = c.authenticate().await.unwrap_err();
    // Never the invoice's fault: the seller's work is parked for an operator, nothing REJECTED.
    assert_eq!(f.class, ErrorClass::Operator);
    assert_eq!(f.code.as_deref(), Some("450"));
    assert!(f.message.contains("tokenu"), "{f}");
    assert!(!format!("{f} {c_cfg:?}", c_cfg = c.config()).contains("not-the-token"));
}

#[tokio::test]
async fn online_send_is_accepted_with_a_valid_ksef_number_and_upo_and_the_same_hash() {
    let sim = sim().await;
    let c = client(&sim);
    let xml = invoice("ONLINE/1");
    let s = c.open_online_session().await.unwrap();
    let sent = c.send_invoice(&s, &xml, &SendOptions::default()).await.unwrap();
    assert_eq!(sent.invoice_hash, ContentHash::of(&xml));

    let (st, outcome) = c.wait_for_invoice(&s.reference, &sent.reference, POLL, WAIT).await.unwrap();
    let InvoiceOutcome::Accepted {
        ksef_number,
        acquisition_date,
    } = outcome
    else {
        panic!("{outcome:?}")
    };
    assert!(acquisition_date.is_some());
    assert_eq!(KsefNumber::parse(ksef_number.as_str()).unwrap(), ksef_number);
    assert_eq!(ksef_number.seller_nip_digits(), "9999999999");
    assert_eq!(st.invoice_hash, ContentHash::of(&xml).to_base64());
    assert_eq!(st.invoice_number.as_deref(), Some("ONLINE/1"));

    // Crypto both ways: the simulator decrypted our AES ciphertext to the very same bytes.
    let ledger = sim.ledger().entries();
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].invoice_hash, ContentHash::of(&xml));
    assert_eq!(ledger[0].ksef_number, ksef_number);

    // UPO three ways: the pre-signed link (no token), by reference, by KSeF number.
    let by_link = c.download_upo(st.upo_download_url.as_deref().unwrap()).await.unwrap();
    let by_ref = c.invoice_upo(&s.reference, &sent.reference).await.unwrap();
    let by_number = c.invoice_upo_by_ksef_number(&s.reference, ksef_number.as_str()).await.unwrap();
    for upo in [&by_link, &by_ref, &by_number] {
        let text = String::from_utf8(upo.xml.clone()).unwrap();
        assert!(
            text.contains(&format!("<SkrotDokumentu>{}</SkrotDokumentu>", ContentHash::of(&xml).to_base64())),
            "{text}"
        );
        assert!(text.contains(&format!("<NumerKSeFDokumentu>{ksef_number}</NumerKSeFDokumentu>")));
        assert!(text.contains("xmlns=\"http://upo.schematy.mf.gov.pl/KSeF/v4-3\""));
        let expected = base64_sha256(&upo.xml);
        assert_eq!(upo.meta_hash.as_deref(), Some(expected.as_str()));
    }

    // Reconciliation by hash finds it; an unknown hash is not there.
    let found = c.find_invoice_by_hash(&s.reference, &ContentHash::of(&xml)).await.unwrap().unwrap();
    assert_eq!(found.reference_number, sent.reference);
    assert!(c
        .find_invoice_by_hash(&s.reference, &ContentHash::of(b"other"))
        .await
        .unwrap()
        .is_none());

    // Close: the session is processed and carries the collective UPO.
    c.close_online_session(&s.reference).await.unwrap();
    let ss = c.wait_for_session(&s.reference, POLL, WAIT).await.unwrap();
    assert_eq!(ss.status.code, 200);
    assert_eq!(
        (ss.invoice_count, ss.successful_invoice_count, ss.failed_invoice_count),
        (Some(1), Some(1), Some(0))
    );
    let page = &ss.upo.as_ref().unwrap().pages[0];
    let session_upo = c.session_upo(&s.reference, &page.reference_number).await.unwrap();
    let linked = c.download_upo(&page.download_url).await.unwrap();
    assert_eq!(session_upo.xml, linked.xml);
    assert!(String::from_utf8(session_upo.xml)
        .unwrap()
        .contains("<CalkowitaLiczbaDokumentow>1</CalkowitaLiczbaDokumentow>"));
}

fn base64_sha256(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(b))
}

#[tokio::test]
async fn every_official_sample_is_accepted_and_duplicates_point_at_the_original() {
    // The samples' sellers: 9999999999 (the Ministry's examples) and 5265877635 (the PDF
    // generator's example). Each is sent in its own seller's context.
    let pdf_seller = Nip::parse("5265877635").unwrap();
    let pdf_token = "sim-token-for-5265877635";
    let mut cfg = sim_config();
    cfg.tokens.push(ksef_sim::SimToken {
        token: pdf_token.into(),
        context: pdf_seller.clone(),
    });
    let sim = ksef_sim::start(cfg).await;
    let c9 = client(&sim);
    let c5 = KsefClient::new(
        client_config(&sim),
        Some(Credentials::Token {
            context: pdf_seller,
            token: KsefToken::new(pdf_token),
        }),
    )
    .unwrap();
    let (s9, s5) = (c9.open_online_session().await.unwrap(), c5.open_online_session().await.unwrap());
    let mut sent = Vec::new();
    for (name, xml) in all_samples() {
        let (c, s) = if name.contains("ksef-pdf-generator") {
            (&c5, &s5)
        } else {
            (&c9, &s9)
        };
        let r = c.send_invoice(s, &xml, &SendOptions::default()).await.unwrap();
        sent.push((name, xml, c, s, r));
    }
    // Several samples share seller + kind + P_2 (e.g. VAT FV2026/02/150): KSeF accepts the first
    // and answers 440 with the original's KSeF number to the others.
    let mut first_of: std::collections::HashMap<(String, String), KsefNumber> = Default::default();
    let mut accepted = 0;
    for (name, xml, c, s, r) in &sent {
        let (st, outcome) = c.wait_for_invoice(&s.reference, &r.reference, POLL, WAIT).await.unwrap();
        let kind = String::from_utf8_lossy(xml)
            .split("<RodzajFaktury>")
            .nth(1)
            .unwrap()
            .split('<')
            .next()
            .unwrap()
            .to_owned();
        let key = (kind, st.invoice_number.clone().unwrap());
        match outcome {
            InvoiceOutcome::Accepted { ksef_number, .. } => {
                assert!(
                    first_of.insert(key, ksef_number).is_none(),
                    "{name}: a second acceptance of one identity"
                );
                accepted += 1;
            }
            InvoiceOutcome::Failed(f) if name.contains("Przykład_24") => {
                // Attachments are allowed in batch only (tests/batch.rs sends it there).
                assert_eq!(
                    (f.class.clone(), f.code.as_deref()),
                    (ErrorClass::Permanent, Some("415")),
                    "{name}: {f}"
                );
            }
            InvoiceOutcome::Failed(f) => match f.class.clone() {
                ErrorClass::Duplicate { original } => assert_eq!(Some(&original), first_of.get(&key), "{name}"),
                other => panic!("{name}: {other:?} {f}"),
            },
            InvoiceOutcome::Pending => unreachable!(),
        }
    }
    assert!(accepted >= 8, "only {accepted} samples accepted");
    // Nothing accepted twice: neither the same bytes nor the same identity.
    let ledger = sim.ledger().entries();
    assert_eq!(ledger.len(), accepted);
    for e in &ledger {
        assert_eq!(sim.ledger().count_hash(&e.invoice_hash), 1);
    }
}

#[tokio::test]
async fn an_invoice_of_another_seller_is_410_in_this_context() {
    let sim = sim().await;
    let c = client(&sim);
    let s = c.open_online_session().await.unwrap();
    let foreign = sample("cirfmf-templates/ksef-pdf-generator-invoice.xml"); // seller 5265877635
    let sent = c.send_invoice(&s, &foreign, &SendOptions::default()).await.unwrap();
    let (_, o) = c.wait_for_invoice(&s.reference, &sent.reference, POLL, WAIT).await.unwrap();
    let InvoiceOutcome::Failed(f) = o else { panic!("{o:?}") };
    assert_eq!((f.class, f.code.as_deref()), (ErrorClass::Operator, Some("410")));
    assert!(sim.ledger().is_empty());
}

#[tokio::test]
async fn malformed_xml_is_450_and_a_resend_is_440_duplicate() {
    let sim = sim().await;
    let c = client(&sim);
    let s = c.open_online_session().await.unwrap();
    let broken = String::from_utf8(invoice("BAD/1")).unwrap().replacen("</Podmiot1>", "", 1);
    let r = c.send_invoice(&s, broken.as_bytes(), &SendOptions::default()).await.unwrap();
    let (_, outcome) = c.wait_for_invoice(&s.reference, &r.reference, POLL, WAIT).await.unwrap();
    let InvoiceOutcome::Failed(f) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!((f.class.clone(), f.code.as_deref()), (ErrorClass::Permanent, Some("450")));
    assert!(f.details.iter().any(|d| d.contains("Nieprawidłowy XML")), "{f}");

    let good = invoice("DUP/1");
    let first = c.send_invoice(&s, &good, &SendOptions::default()).await.unwrap();
    let (_, o1) = c.wait_for_invoice(&s.reference, &first.reference, POLL, WAIT).await.unwrap();
    let InvoiceOutcome::Accepted { ksef_number, .. } = o1 else {
        panic!("{o1:?}")
    };
    // Same identity, different bytes (a whitespace change): still KSeF's duplicate.
    let mut again = good.clone();
    again.extend_from_slice(b"\n");
    let second = c.send_invoice(&s, &again, &SendOptions::default()).await.unwrap();
    let (_, o2) = c.wait_for_invoice(&s.reference, &second.reference, POLL, WAIT).await.unwrap();
    let InvoiceOutcome::Failed(f) = o2 else { panic!("{o2:?}") };
    assert_eq!(f.class, ErrorClass::Duplicate { original: ksef_number });
    assert_eq!(f.code.as_deref(), Some("440"));
    assert_eq!(sim.ledger().len(), 1);
}

#[tokio::test]
async fn hash_size_and_key_mismatches_are_caught_by_the_simulator() {
    let sim = sim().await;
    let c = client(&sim);
    let s = c.open_online_session().await.unwrap();
    let other = c.open_online_session().await.unwrap();
    let xml = invoice("MISMATCH/1");
    let token = c.access_token().await.unwrap();
    let url = format!("{}/sessions/online/{}/invoices", sim.api_url(), s.reference);
    // Posts a tampered body as the client would; returns the status and the parsed answer.
    let post = |body: serde_json::Value| {
        let (url, token) = (url.clone(), token.clone());
        async move {
            let r = reqwest::Client::new()
                .post(url)
                .bearer_auth(token.expose_secret())
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.bytes().await.unwrap().to_vec())
        }
    };
    let classify =
        |status: u16, body: &[u8]| ksef_client::failure_map::from_response("send_invoice", status, None, body, chrono::Utc::now());
    let body = s.send_body(&xml, &SendOptions::default());

    let mut wrong = body.clone();
    wrong["encryptedInvoiceSize"] = serde_json::json!(body["encryptedInvoiceSize"].as_u64().unwrap() + 1);
    let (st, b) = post(wrong).await;
    let f = classify(st, &b);
    assert_eq!((f.class, f.code.as_deref()), (ErrorClass::Permanent, Some("21402")));

    let mut wrong = body.clone();
    wrong["encryptedInvoiceHash"] = serde_json::json!(ContentHash::of(b"x").to_base64());
    let (st, b) = post(wrong).await;
    let f = classify(st, &b);
    assert_eq!((f.class, f.code.as_deref()), (ErrorClass::Permanent, Some("21403")));

    // Accepted for processing (202), then refused in the status: 430 for a declared size or
    // hash that is not the content's, 435 for content under another session's key.
    let mut cases = Vec::new();
    let mut wrong = body.clone();
    wrong["invoiceSize"] = serde_json::json!(xml.len() + 1);
    cases.push((wrong, "430"));
    let mut wrong = body.clone();
    wrong["invoiceHash"] = serde_json::json!(ContentHash::of(b"y").to_base64());
    cases.push((wrong, "430"));
    // Under the wrong key the padding check fails (435), except when the garbage happens to end
    // in valid padding (about 1 in 256); then the size check catches it (430), as in KSeF.
    cases.push((other.send_body(&xml, &SendOptions::default()), "435|430"));
    for (wrong, code) in cases {
        let (st, b) = post(wrong).await;
        assert_eq!(st, 202, "{}", String::from_utf8_lossy(&b));
        let reference = serde_json::from_slice::<serde_json::Value>(&b).unwrap()["referenceNumber"]
            .as_str()
            .unwrap()
            .to_owned();
        let (_, o) = c.wait_for_invoice(&s.reference, &reference, POLL, WAIT).await.unwrap();
        let InvoiceOutcome::Failed(f) = o else { panic!("{o:?}") };
        assert_eq!(f.class, ErrorClass::Permanent);
        assert!(code.split('|').any(|c| f.code.as_deref() == Some(c)), "expected {code}, got {f}");
    }
    // The untampered body is accepted: the simulator decrypts to the bytes we hashed.
    let (st, b) = post(body).await;
    assert_eq!(st, 202);
    let reference = serde_json::from_slice::<serde_json::Value>(&b).unwrap()["referenceNumber"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, o) = c.wait_for_invoice(&s.reference, &reference, POLL, WAIT).await.unwrap();
    assert!(matches!(o, InvoiceOutcome::Accepted { .. }), "{o:?}");
    assert_eq!(sim.ledger().entries()[0].invoice_hash, ContentHash::of(&xml));
}

#[tokio::test]
async fn closed_and_unknown_sessions_need_a_new_session() {
    let sim = sim().await;
    let c = client(&sim);
    let s = c.open_online_session().await.unwrap();
    c.close_online_session(&s.reference).await.unwrap();
    let f = c.send_invoice(&s, &invoice("LATE/1"), &SendOptions::default()).await.unwrap_err();
    assert_eq!((f.class.clone(), f.code.as_deref()), (ErrorClass::NeedsNewSession, Some("21180")));
    assert!(f.details[0].contains("uniemożliwia wysyłkę"), "{f}");
    // A second close is 21180 too (closing is safe to retry).
    let f = c.close_online_session(&s.reference).await.unwrap_err();
    assert_eq!(f.code.as_deref(), Some("21180"));
    let f = c.session_status("20250625-SO-2C3E6C8000-B675CF5D68-07").await.unwrap_err();
    assert_eq!((f.class, f.code.as_deref()), (ErrorClass::NeedsNewSession, Some("21173")));
}

#[tokio::test]
async fn an_emergency_key_rotation_is_survived_by_refreshing_the_keys() {
    let sim = sim().await;
    let c = client(&sim);
    let before = c.public_keys().await.unwrap();
    c.access_token().await.unwrap();
    sim.rotate_keys();
    // The cached publicKeyId is now unknown (21470): the client refetches and retries once.
    let s = c.open_online_session().await.unwrap();
    let after = c.public_keys().await.unwrap();
    assert_ne!(before[0].public_key_id, after[0].public_key_id);
    let sent = c.send_invoice(&s, &invoice("ROT/1"), &SendOptions::default()).await.unwrap();
    let (_, o) = c.wait_for_invoice(&s.reference, &sent.reference, POLL, WAIT).await.unwrap();
    assert!(matches!(o, InvoiceOutcome::Accepted { .. }), "{o:?}");
}

#[tokio::test]
async fn lost_sessions_are_found_again_by_the_session_list() {
    let sim = sim().await;
    let c = client(&sim);
    let since = chrono::Utc::now() - chrono::Duration::seconds(1);
    let a = c.open_online_session().await.unwrap();
    let b = c.open_online_session().await.unwrap();
    let xml = invoice("LIST/1");
    c.send_invoice(&b, &xml, &SendOptions::default()).await.unwrap();
    let online = c.list_sessions(true, since).await.unwrap();
    let refs: Vec<&str> = online.iter().map(|s| s.reference_number.as_str()).collect();
    assert_eq!(refs, vec![b.reference.as_str(), a.reference.as_str()], "newest first");
    assert_eq!(online[0].total_invoice_count, 1);
    assert!(c.list_sessions(false, since).await.unwrap().is_empty(), "no batch sessions");
    assert!(c
        .list_sessions(true, chrono::Utc::now() + chrono::Duration::hours(1))
        .await
        .unwrap()
        .is_empty());
    // From the list to the invoice by hash: the reconciliation path after a lost answer.
    let found = c
        .find_invoice_by_hash(&online[0].reference_number, &ContentHash::of(&xml))
        .await
        .unwrap();
    assert!(found.is_some());
}

#[tokio::test]
async fn a_session_key_ksef_cannot_decrypt_fails_the_session_with_415() {
    use base64::Engine as _;
    let sim = sim().await;
    let c = client(&sim);
    let token = c.access_token().await.unwrap();
    let keys = c.public_keys().await.unwrap();
    let sym = ksef_client::pick_key(&keys, ksef_client::KeyUsage::SymmetricKeyEncryption, chrono::Utc::now()).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let body = serde_json::json!({
        "formCode": {"systemCode": "FA (3)", "schemaVersion": "1-0E", "value": "FA"},
        "encryption": {"encryptedSymmetricKey": b64.encode([7u8; 256]), "initializationVector": b64.encode([1u8; 16]), "publicKeyId": sym.public_key_id},
    });
    let r = reqwest::Client::new()
        .post(format!("{}/sessions/online", sim.api_url()))
        .bearer_auth(token.expose_secret())
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let reference = r.json::<serde_json::Value>().await.unwrap()["referenceNumber"]
        .as_str()
        .unwrap()
        .to_owned();
    let f = c.wait_for_session(&reference, POLL, WAIT).await.unwrap_err();
    assert_eq!((f.class, f.code.as_deref()), (ErrorClass::NeedsNewSession, Some("415")));
}

#[tokio::test]
async fn statuses_move_from_100_through_150_to_200_on_the_configured_schedule() {
    use std::time::Duration;
    let sim = ksef_sim::start(ksef_sim::SimConfig {
        accept_delay: Duration::from_millis(600),
        processing_delay: Duration::from_millis(600),
        ..sim_config()
    })
    .await;
    let c = client(&sim);
    let s = c.open_online_session().await.unwrap();
    let sent = c.send_invoice(&s, &invoice("STEPS/1"), &SendOptions::default()).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..100 {
        let code = c.invoice_status(&s.reference, &sent.reference).await.unwrap().status.code;
        if seen.last() != Some(&code) {
            seen.push(code);
        }
        if code == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(seen, vec![100, 150, 200]);
    // The session reports 100 (open) until closed, then 200 once its invoices are final.
    assert_eq!(c.session_status(&s.reference).await.unwrap().status.code, 100);
    c.close_online_session(&s.reference).await.unwrap();
    assert_eq!(c.session_status(&s.reference).await.unwrap().status.code, 200);
}

#[tokio::test]
async fn tokens_and_sessions_shared_through_a_cache_work_in_another_process() {
    // Process A logs in and opens a session; process B gets both from the shared cache (as
    // strings) and sends without logging in or opening anything.
    let sim = sim().await;
    let a = client(&sim);
    let session = a.open_online_session().await.unwrap();
    let tokens = a.tokens().await.unwrap().export_secret_json();
    let shared_session = session.export_secret_json();

    let b = client(&sim);
    b.set_tokens(ksef_client::TokenSet::import_secret_json(&tokens).unwrap()).await;
    let session_b = ksef_client::OnlineSession::import_secret_json(&shared_session).unwrap();
    let sent = b
        .send_invoice(&session_b, &invoice("SHARED/1"), &SendOptions::default())
        .await
        .unwrap();
    let (_, o) = b.wait_for_invoice(&session_b.reference, &sent.reference, POLL, WAIT).await.unwrap();
    assert!(matches!(o, InvoiceOutcome::Accepted { .. }), "{o:?}");
    assert_eq!(
        b.tokens().await.unwrap().auth_reference,
        a.tokens().await.unwrap().auth_reference,
        "B did not log in again"
    );
}

#[tokio::test]
async fn an_expired_or_full_session_needs_a_new_session() {
    use std::time::Duration;
    let sim = ksef_sim::start(ksef_sim::SimConfig {
        session_lifetime: Duration::from_millis(300),
        max_invoices_per_session: 1,
        ..sim_config()
    })
    .await;
    let c = client(&sim);
    let s = c.open_online_session().await.unwrap();
    c.send_invoice(&s, &invoice("FULL/1"), &SendOptions::default()).await.unwrap();
    let f = c.send_invoice(&s, &invoice("FULL/2"), &SendOptions::default()).await.unwrap_err();
    assert_eq!((f.class, f.code.as_deref()), (ErrorClass::NeedsNewSession, Some("21155")));
    let s2 = c.open_online_session().await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    // KSeF closed it at validUntil.
    let f = c.send_invoice(&s2, &invoice("LATE/2"), &SendOptions::default()).await.unwrap_err();
    assert_eq!((f.class, f.code.as_deref()), (ErrorClass::NeedsNewSession, Some("21180")));
    assert!(s2.valid_until <= chrono::Utc::now());
}
