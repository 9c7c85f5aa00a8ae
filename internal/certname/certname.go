// Package certname reads and writes the names Windows puts in certificates
// that crypto/x509 does not: the UPN otherName of a subjectAltName, and the
// otherName structure the SID extension shares. The gateway reads them
// (seg), and the test PKIs write them (testpki, winrstest).
package certname

import (
	"bytes"
	"encoding/asn1"
	"errors"
	"fmt"
	"unicode/utf8"
)

// oidUPN is the otherName type of a UPN in a subjectAltName.
var oidUPN = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 20, 2, 3}

// ParseUPNs returns the UPNs in a subjectAltName extension's value (the DER
// of GeneralNames): the otherName entries of type 1.3.6.1.4.1.311.20.2.3,
// whose value is a UTF8String. crypto/x509 parses the SAN but drops
// otherName entries.
func ParseUPNs(der []byte) ([]string, error) {
	var names []asn1.RawValue
	rest, err := asn1.Unmarshal(der, &names)
	if err != nil {
		return nil, fmt.Errorf("subjectAltName: %w", err)
	}
	if len(rest) != 0 {
		return nil, errors.New("subjectAltName: trailing data")
	}
	var upns []string
	for _, n := range names {
		id, rest, ok, err := OtherNameID(n)
		if err != nil {
			return nil, fmt.Errorf("subjectAltName otherName: %w", err)
		}
		if !ok || !id.Equal(oidUPN) {
			continue
		}
		v, err := OtherNameValue(rest)
		if err != nil {
			return nil, fmt.Errorf("subjectAltName UPN: %w", err)
		}
		if v.Class != asn1.ClassUniversal || v.Tag != asn1.TagUTF8String || v.IsCompound {
			return nil, errors.New("subjectAltName UPN: not a UTF8String")
		}
		if !utf8.Valid(v.Bytes) {
			return nil, errors.New("subjectAltName UPN: invalid UTF-8")
		}
		upns = append(upns, string(v.Bytes))
	}
	return upns, nil
}

// MarshalUPN returns a GeneralName otherName of type UPN, for
// x509.Certificate.ExtraExtensions of device certificates (an MDM's CA, and
// tests).
func MarshalUPN(upn string) ([]byte, error) {
	value, err := asn1.MarshalWithParams(upn, "utf8")
	if err != nil {
		return nil, err
	}
	return MarshalOtherName(oidUPN, value)
}

// An otherName GeneralName (RFC 5280 4.2.1.6) is
// [0] IMPLICIT SEQUENCE { type-id OID, value [0] EXPLICIT ANY }: the UPN of
// the SAN and the SID of the SID extension are both written so.

// OtherNameID reads an otherName's type-id; ok is false for a GeneralName
// of another kind, and rest is what follows the type-id.
func OtherNameID(n asn1.RawValue) (id asn1.ObjectIdentifier, rest []byte, ok bool, err error) {
	if n.Class != asn1.ClassContextSpecific || n.Tag != 0 || !n.IsCompound {
		return nil, nil, false, nil
	}
	if rest, err = asn1.Unmarshal(n.Bytes, &id); err != nil {
		return nil, nil, false, err
	}
	return id, rest, true, nil
}

// OtherNameValue reads the [0] EXPLICIT value after an otherName's type-id:
// one element, nothing after it.
func OtherNameValue(rest []byte) (asn1.RawValue, error) {
	var wrapped, v asn1.RawValue
	rest, err := asn1.Unmarshal(rest, &wrapped)
	if err != nil {
		return v, err
	}
	if len(rest) != 0 || wrapped.Class != asn1.ClassContextSpecific || wrapped.Tag != 0 || !wrapped.IsCompound {
		return v, errors.New("not an explicit [0] value")
	}
	if rest, err = asn1.Unmarshal(wrapped.Bytes, &v); err != nil {
		return v, err
	}
	if len(rest) != 0 {
		return v, errors.New("data after the value")
	}
	return v, nil
}

// MarshalOtherName writes an otherName of type id around value (DER).
func MarshalOtherName(id asn1.ObjectIdentifier, value []byte) ([]byte, error) {
	oid, err := asn1.Marshal(id)
	if err != nil {
		return nil, err
	}
	explicit, err := asn1.Marshal(asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: value})
	if err != nil {
		return nil, err
	}
	return asn1.Marshal(asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: append(oid, explicit...)})
}

// SANExtension wraps GeneralName values (MarshalUPN's and others) into a
// subjectAltName extension.
func SANExtension(generalNames ...[]byte) ([]byte, error) {
	return asn1.Marshal(asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSequence, IsCompound: true, Bytes: bytes.Join(generalNames, nil)})
}

// OIDSIDOtherName is the otherName type of the SID in the SID extension
// (szOID_NTDS_OBJECTSID); SIDURIPrefix is the SAN URI form of a SID
// (KB5014754, Intune, ADCS).
var OIDSIDOtherName = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 25, 2, 1}

const SIDURIPrefix = "tag:microsoft.com,2022-09-14:sid:"

// MarshalSIDExtension is the value of a SID extension (OID
// 1.3.6.1.4.1.311.25.2) for the SID s, as ADCS writes it: a SEQUENCE of one
// otherName whose [0] holds s as text in an OCTET STRING. s is written as
// given: the caller checks it is a SID.
func MarshalSIDExtension(s string) ([]byte, error) {
	octets, err := asn1.Marshal([]byte(s))
	if err != nil {
		return nil, err
	}
	on, err := MarshalOtherName(OIDSIDOtherName, octets)
	if err != nil {
		return nil, err
	}
	return asn1.Marshal(asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSequence, IsCompound: true, Bytes: on})
}
